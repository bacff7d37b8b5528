"""The oracle: labels under a budget, draws until acceptance, TP(N) and N* (tp/), proxies, the probe, replays and
the figures.
"""
