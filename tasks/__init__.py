"""Thin Prefect wrappers over the stages (`sluice.stages`): each reads its hand-off from the run folder, calls one
plain function, writes its result atomically beside it and logs what happened.

    stage.py   the generic task for the table stages (ingest, dedup, route)
    infer.py   a tier's partition answered (locally or dispatched to workers)
    validate.py  a tier with a `reference_tier` compared with it before use; refused, its rows go on
    review.py  a tier's retry / escalation decisions
    land.py    the run landed in the warehouse, its summary published as artifacts
"""
