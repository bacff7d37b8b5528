# oracle stage: see README (being built)
