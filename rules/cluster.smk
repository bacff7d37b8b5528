# cluster stage: see README (being built)
