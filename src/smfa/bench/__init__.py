"""S-MLLMUn Bench: the procedural benchmark (profiles, portraits, fundus scans, shapes, questions, splits)."""
