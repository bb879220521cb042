"""What people read about runs, computed from the warehouse (never written back by a stage):

    summary.py      the run summary: terminal table, Prefect artifacts
    html.py         `sluice report`: one run as a self-contained HTML page
    forecast.py     `sluice plan`: cost and savings forecast before a run (assumptions.py: what it learns)
    economics.py    `sluice economics`: self-hosting against the API, per worker class
"""
