"""HE-friendly architecture search: operation counts of compiled programs, a calibrated
latency model, and HEMET's greedy block-by-block search.

``counts``     exact HE operation counts per step and level of a compiled program
``calibrate``  per-operation latency of this engine, measured through the HE backend
``cost``       compile a network as the bench runs it; predicted latency = counts x latency
``params``     the bench's parameter and key-plan choices
``blocks``     the search space: blocks of a network and their replacements
``search``     the greedy search (``hemet search``)
``finetune``   accuracy after a short fine-tune (PyTorch, optional)
"""
