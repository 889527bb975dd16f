"""Trials on a Ray cluster: the controller stays here, each trial runs on one node.

Optional: `pip install seel[ray]`. Nothing outside this package imports Ray.

    cluster.py    connect (or start a local instance), check SEEL on every node
    runner.py     RayRunner: the Runner that places trials on slots and streams their events
    worker.py     TrialWorker: the actor on a node that runs trials as a local run does
    transfer.py   a trial directory, packed on the node and unpacked into the run directory
"""
