#!/usr/bin/env python3
"""Compares two rendered installs object by object (called by ci/helm.sh).

Usage: compare_installs.py KUSTOMIZE.yaml HELM.yaml [KUSTOMIZE2.yaml ...] -- HELM.yaml

Every object is keyed by (API group, kind, namespace, name); both sides must hold the same keys
and, for each key, the same object once the differences that are Helm's own are taken out:
- Helm's bookkeeping labels (helm.sh/chart, app.kubernetes.io/managed-by, .../instance,
  .../version) on the Helm side;
- the CustomResourceDefinition's labels: Helm installs crds/ verbatim (it cannot template them),
  so the kustomize-added app.kubernetes.io/part-of label is not there; the CRD's content is
  compared in full (and ci/helm.sh checks the two files are byte-identical).
Nothing else is ignored: a changed rule, value, order of a list or extra field is drift.
Exits 1 with a unified diff of every differing object.
"""

import difflib
import sys

import yaml

HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
}


def load(paths):
    objects = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if not doc:
                    continue
                group = doc.get("apiVersion", "").rpartition("/")[0]
                meta = doc.get("metadata", {})
                key = (group, doc.get("kind"), meta.get("namespace", ""), meta.get("name"))
                if key in objects:
                    sys.exit(f"{path}: {key} appears twice")
                objects[key] = doc
    return objects


def normalize(obj, helm_side):
    meta = obj.setdefault("metadata", {})
    labels = meta.get("labels") or {}
    if helm_side:
        for label in HELM_LABELS:
            labels.pop(label, None)
    if obj.get("kind") == "CustomResourceDefinition":
        labels.pop("app.kubernetes.io/part-of", None)
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    return obj


def main(argv):
    if "--" not in argv or argv.index("--") == 0 or argv.index("--") != len(argv) - 2:
        sys.exit(__doc__)
    split = argv.index("--")
    kustomize = load(argv[:split])
    helm = load(argv[split + 1:])
    problems = 0
    for key in sorted(set(kustomize) - set(helm), key=str):
        print(f"   only in the kustomize install: {key}")
        problems += 1
    for key in sorted(set(helm) - set(kustomize), key=str):
        print(f"   only in the Helm install: {key}")
        problems += 1
    for key in sorted(set(kustomize) & set(helm), key=str):
        left, right = normalize(kustomize[key], False), normalize(helm[key], True)
        # Compared as data (kustomize writes the float 1.0 as 1, Helm copies crds/ verbatim).
        if left != right:
            a = yaml.safe_dump(left, sort_keys=True)
            b = yaml.safe_dump(right, sort_keys=True)
            problems += 1
            print(f"   differs: {key}")
            sys.stdout.writelines(
                "     " + line
                for line in difflib.unified_diff(
                    a.splitlines(True), b.splitlines(True), "kustomize", "helm"
                )
            )
    same = len(set(kustomize) & set(helm))
    if problems:
        print(f"   {problems} difference(s)")
        return 1
    print(f"   {same} objects, identical")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
