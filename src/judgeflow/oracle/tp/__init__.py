"""Statistics of oracle-verified true-positive curves (issue 4).

model       closed-form TP(N) under the Beta-judge model
fit         maximum-likelihood (p0, p1, a, b) from per-question records
intervals   Hoeffding, Clopper-Pearson and betting (anytime-valid) bounds
strategies  oracle labelling strategies that certify N* under a budget
simulate    strategies on a known curve (calls, N*, error rate)
bon         Best-of-N over (N, J, k): empirical with bounds, and the independent-judge model
"""
