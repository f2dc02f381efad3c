"""Public dataset layouts, read exactly as published (LLaVA, SeeClick, ScreenSpot, Mind2Web, ...).

Each module parses one layout into typed records and nothing more: the data pipeline turns the
records into training samples (`data_pipeline/public/`), and `eval/benchmarks/` scores a policy
against the same records, so the two can never read a layout differently. Errors are
`magma.layouts.errors.LayoutError` naming the file and the record.
"""
