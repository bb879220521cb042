"""What the stages agree on, in small modules every stage may import (and none of which imports a stage):

    columns.py  the tables stages hand over (row schema, answer schema, attempt kinds, limits)
    shapes.py   request shapes: chats, sampling parameters, response schemas
    answers.py  validating an answer against its schema; whether two answers agree
    names.py    dataset names and run ids safe in paths, SQL and S3 keys
"""
