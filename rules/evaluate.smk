# evaluate stage: see README (being built)
