"""``smfa audit verify RUN``: check an unlearning run's audit record (:mod:`smfa.stages.audit`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from smfa.errors import OutputError
from smfa.rundir import read_json
from smfa.stages.audit import AUDIT_JSON, SIGNATURE_ALGORITHM, key_id, read_key, verify


def _verify(args: Any) -> int:
    key = read_key(args.key_file)
    problems = verify(args.run, key)
    path = Path(args.run) / AUDIT_JSON
    unsigned = (f"note: {path} is unsigned: this shows the weight files match it (integrity against accidental "
                "change), not that the record itself was not edited; write runs with --key-file to sign them")
    if problems:
        for line in problems:
            print(f"smfa audit verify: {line}", file=sys.stderr)
        if key is None:
            print(unsigned)
        return 2
    n = sum(len(v["files"]) for v in read_json(path, OutputError)["weights"].values())
    signed = f"; its {SIGNATURE_ALGORITHM} signature holds (key id {key_id(key)})" if key is not None else ""
    print(f"OK: {n} weight files match {path}{signed}")
    if key is None:
        print(unsigned)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="check an unlearning run's audit record",
                       description="Audit records of unlearning runs (audit.json, audit.md, audit.sig).")
    verbs = p.add_subparsers(dest="audit_command", metavar="VERB", required=True)
    v = verbs.add_parser("verify", help="check RUN's audit signature and recompute its weight hashes: OK (exit 0) or what differs (exit 2)",
                         description="With --key-file, check the HMAC-SHA256 signature of RUN/audit.json and audit.md "
                         "(audit.sig) first; then recompute the sha256 of every input and output weight file the "
                         "record lists. Print OK, or one line per problem and exit 2. A signed record needs the key; "
                         "an unsigned one only proves the weights match the record (see docs/audit.md).")
    v.add_argument("run", help="an unlearning run directory (smfa forget / smfa unlearn)")
    v.add_argument("--key-file", dest="key_file", metavar="PATH",
                   help="the file holding the key the record was signed with (smfa forget/unlearn --key-file)")
    v.set_defaults(func=_verify)
