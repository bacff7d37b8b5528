"""Judging: the judges and their k-of-J verdicts, the exact verifier, trained judges, the calibration split and
the judges' quality against the oracle.
"""
