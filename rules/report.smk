# report stage: see README (being built)
