"""The lab: research tools that run the product's code but are not part of the mail service:
offline evaluation and the leak-free simulation (`evaluation`), the benchmark of the daily run
(`bench`), and their commands (`cli`: `digest eval`, `digest simulate`, `digest bench`).

The product never imports the lab; their extra dependencies come with `pip install 'digest[lab]'`.
"""
