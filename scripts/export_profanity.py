#!/usr/bin/env python3
"""Export the model bundled in PyPI `alt-profanity-check` to a JSON artifact the Rust scorer reads.

Run with a Python that has `alt-profanity-check==1.9.1` and its pinned scikit-learn/joblib installed
(scripts/setup.sh makes one in .detox/sklearn-venv):

    python scripts/export_profanity.py OUT.json

The artifact holds everything `predict_prob` uses: the vocabulary (term -> feature index), the idf
vector, the vectorizer settings the Rust code depends on, and for each calibrated fold the LinearSVC
weights/intercept and the sigmoid calibration (a, b). Every setting the Rust side hard-codes is
asserted here, so a package that changed its model fails at set-up instead of scoring differently.
Floats are written with Python's shortest round-trip repr, which serde_json (float_roundtrip) reads
back bit-exactly.
"""

import argparse
import importlib.metadata as metadata
import json
import math
import os
import sys
import tempfile

FORMAT = "detox-profanity-v1"
PINS = {"alt-profanity-check": "1.9.1", "scikit-learn": "1.9.1", "joblib": "1.6.0"}
FOLDS = 5


def fail(message):
    sys.exit(f"export_profanity: {message}")


def check(condition, message):
    if not condition:
        fail(message)


def finite_list(values, what):
    out = [float(v) for v in values]
    check(all(math.isfinite(v) for v in out), f"{what} has a non-finite value")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the JSON artifact")
    args = parser.parse_args()

    for package, version in PINS.items():
        found = metadata.version(package)
        check(found == version, f"{package} {found} installed, {version} expected")

    # Importing profanity_check loads both joblib files from the installed wheel.
    from profanity_check import profanity_check as pc
    from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
    from sklearn.svm import LinearSVC

    vec, model = pc.vectorizer, pc.model
    check(type(vec) is TfidfVectorizer, f"vectorizer is {type(vec).__name__}")
    check(type(model) is CalibratedClassifierCV, f"model is {type(model).__name__}")

    # What the Rust tokenizer and weighting implement; anything else must fail loudly.
    expected = {
        "input": "content",
        "analyzer": "word",
        "preprocessor": None,
        "tokenizer": None,
        "strip_accents": None,
        "lowercase": True,
        "token_pattern": r"(?u)\b\w\w+\b",
        "ngram_range": (1, 1),
        "stop_words": "english",
        "binary": False,
        "use_idf": True,
        "norm": "l2",
        "smooth_idf": True,
        "sublinear_tf": False,
    }
    params = vec.get_params()
    for key, value in expected.items():
        check(params[key] == value, f"vectorizer {key}={params[key]!r}, Rust implements {value!r}")

    vocabulary = {str(term): int(index) for term, index in vec.vocabulary_.items()}
    n = len(vocabulary)
    check(sorted(vocabulary.values()) == list(range(n)), "vocabulary indices are not 0..n")
    idf = finite_list(vec.idf_, "idf")
    check(len(idf) == n, f"idf has {len(idf)} entries for {n} terms")
    # sklearn drops stop words before the vocabulary lookup; none are in this vocabulary, so the
    # lookup alone is exact. The list still travels so the Rust side can enforce it.
    stop_words = sorted(ENGLISH_STOP_WORDS)
    in_vocab = [w for w in stop_words if w in vocabulary]
    check(not in_vocab, f"stop words in the vocabulary: {in_vocab[:10]}")

    check(list(model.classes_) == [0, 1], f"classes {list(model.classes_)}")
    check(model.method == "sigmoid", f"calibration method {model.method!r}")
    folds = []
    check(len(model.calibrated_classifiers_) == FOLDS,
          f"{len(model.calibrated_classifiers_)} calibrated folds, {FOLDS} expected")
    for k, cc in enumerate(model.calibrated_classifiers_):
        svc = cc.estimator
        check(type(svc) is LinearSVC, f"fold {k} estimator is {type(svc).__name__}")
        check(cc.method == "sigmoid", f"fold {k} method {cc.method!r}")
        check(list(svc.classes_) == [0, 1], f"fold {k} classes {list(svc.classes_)}")
        check(svc.coef_.shape == (1, n), f"fold {k} coef shape {svc.coef_.shape}")
        check(svc.intercept_.shape == (1,), f"fold {k} intercept shape {svc.intercept_.shape}")
        check(len(cc.calibrators) == 1, f"fold {k} has {len(cc.calibrators)} calibrators")
        cal = cc.calibrators[0]
        check(type(cal) is _SigmoidCalibration, f"fold {k} calibrator is {type(cal).__name__}")
        folds.append({
            "coef": finite_list(svc.coef_[0], f"fold {k} coef"),
            "intercept": finite_list(svc.intercept_, f"fold {k} intercept")[0],
            "a": finite_list([cal.a_], f"fold {k} a")[0],
            "b": finite_list([cal.b_], f"fold {k} b")[0],
        })

    artifact = {
        "format": FORMAT,
        "source": dict(PINS),
        "vectorizer": {
            "lowercase": True,
            "token_pattern": expected["token_pattern"],
            "ngram_range": [1, 1],
            "binary": False,
            "norm": "l2",
            "use_idf": True,
            "smooth_idf": True,
            "sublinear_tf": False,
            "stop_words": stop_words,
        },
        "vocabulary": vocabulary,
        "idf": idf,
        "folds": folds,
    }
    # Write beside the target and rename, so an interrupted export never leaves a partial file that
    # set-up would then take as done.
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".profanity-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(artifact, f, ensure_ascii=False, allow_nan=False, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the artifact is not secret
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"export_profanity: {n} terms, {FOLDS} folds -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
