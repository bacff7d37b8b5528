# train stage: see README (being built)
