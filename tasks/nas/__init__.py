"""The Cerebros NAS library: datasets, architecture proposals, training, the Pareto frontier.

Plain functions and tables for the NAS saga to call: ``data`` loads a bundled dataset and
splits it, ``search`` proposes architectures from a search space, ``training`` trains one
architecture an epoch at a time with resumable skops checkpoints, ``frontier`` keeps the
architectures no other beats on both accuracy and size, ``storage`` says where files go, and
``models`` holds the runs, trials, artifacts and model versions.
"""
