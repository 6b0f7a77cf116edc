#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests offline (called by ci/validate-manifests.sh).

Usage: validate_manifests.py --kubernetes-version 1.33 --crd manifests/crds/metricssidecars.yaml
                             NAME=RENDERED.yaml [NAME=RENDERED.yaml ...]

For every object of every rendered stream:
- built-in kinds: validated with kubernetes-validate against the Kubernetes JSON schemas of the
  requested version, in strict mode (unknown fields are errors, as with kubectl's default
  --validate=strict);
- MetricsSidecar (monasca.openstack.org): validated against the openAPIV3Schema of our generated
  CRD, as the apiserver would: unknown fields are errors, defaults applied, then the CRD's CEL
  rules (x-kubernetes-validations) evaluated; metadata against the ObjectMeta schema;
- cert-manager and prometheus-operator objects: skipped with a note (their CRDs are not here);
- any other kind: an error (nothing passes unvalidated by accident).
Then what the apiserver checks beyond the schemas (names, label syntax, port names) and what
holds the install together: references between objects (Service -> pods -> ports,
bindings -> roles and ServiceAccounts, webhook -> Service, volumes -> ConfigMaps and
certificate Secrets, inject annotations -> MetricsSidecars), the product contract of
DESIGN.md (webhook configuration, operator ports and probes), and least-privilege RBAC.

Exits 1 when anything failed, after printing every failure.
"""

import argparse
import copy
import re
import sys
from collections import Counter, defaultdict

import cel
import jsonschema
import kubernetes_validate.utils as kv
import yaml
from referencing import Registry, Resource

OUR_GROUP = "monasca.openstack.org"
SKIPPED_GROUPS = {
    "cert-manager.io": "cert-manager's CRDs are not installed here",
    "monitoring.coreos.com": "prometheus-operator's CRDs are not installed here",
}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "PriorityClass",
    "StorageClass", "PersistentVolume", "ClusterIssuer", "APIService",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}
OPERATOR = "monasca-operator"
WEBHOOK_CONFIGURATION = "monasca-sidecar-injector"
INJECT = "monasca.openstack.org/inject"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Report:
    def __init__(self):
        self.errors = []
        self.counts = Counter()
        self.skipped = []

    def error(self, where, message):
        self.errors.append(f"{where}: {message}")
        print(f"  FAIL {where}: {message}")

    def check(self, condition, where, message):
        self.counts["cross-checks"] += 1
        if not condition:
            self.error(where, message)
        return condition


def ident(obj):
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def group_of(obj):
    api_version = obj.get("apiVersion", "")
    return api_version.split("/")[0] if "/" in api_version else ""


# --- CRD schemas ----------------------------------------------------------------------------

def structural_to_jsonschema(s):
    """An apiextensions/v1 JSONSchemaProps as a JSON Schema (2020-12) that, like the apiserver with
    strict field validation, refuses unknown fields."""
    if not isinstance(s, dict):
        return s
    out = {}
    for key, value in s.items():
        if key == "properties":
            out[key] = {name: structural_to_jsonschema(p) for name, p in value.items()}
        elif key == "items":
            out[key] = structural_to_jsonschema(value)
        elif key == "additionalProperties":
            out[key] = structural_to_jsonschema(value) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural_to_jsonschema(x) for x in value]
        elif key == "not":
            out[key] = structural_to_jsonschema(value)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            continue  # OpenAPI 3.0 booleans, handled below
        elif key.startswith("x-kubernetes-") or key in (
                "nullable", "default", "description", "example", "externalDocs", "title", "format"):
            continue
        else:
            out[key] = value
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if s.get(exclusive) is True and bound in out:
            out[exclusive] = out.pop(bound)
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if s.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    is_object = out.get("type") == "object" or "properties" in out
    if is_object and "additionalProperties" not in out and not s.get(
            "x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def apply_defaults(schema, value):
    """Structural defaulting, as the apiserver does before evaluating CEL rules."""
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
        for name, prop in (schema.get("properties") or {}).items():
            if name in value:
                apply_defaults(prop, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in (schema.get("properties") or {}):
                    apply_defaults(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)


def cel_rules(schema, value, path, found):
    """(path, rule, message, self) for every x-kubernetes-validations rule that applies."""
    for rule in schema.get("x-kubernetes-validations") or []:
        found.append((path or "<root>", rule, value))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, prop in props.items():
            if name in value and value[name] is not None:
                cel_rules(prop, value[name], f"{path}.{name}" if path else name, found)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in props:
                    cel_rules(extra, item, f"{path}.{name}", found)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            cel_rules(schema["items"], item, f"{path}[{i}]", found)


def check_defaults(schema, path, report, where):
    """The apiserver refuses a CRD whose defaults do not validate against their own schema."""
    if "default" in schema:
        validator = jsonschema.Draft202012Validator(structural_to_jsonschema(schema))
        for err in validator.iter_errors(schema["default"]):
            report.error(where, f"default of {path or '<root>'} is invalid: {err.message}")
        report.counts["CRD defaults checked"] += 1
    for name, prop in (schema.get("properties") or {}).items():
        check_defaults(prop, f"{path}.{name}" if path else name, report, where)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            check_defaults(schema[key], f"{path}[]", report, where)


class CrdValidator:
    def __init__(self, crd, k8s_version, report):
        self.crd = crd
        spec = crd["spec"]
        self.group = spec["group"]
        self.kind = spec["names"]["kind"]
        self.scope = spec["scope"]
        self.versions = {v["name"]: v for v in spec["versions"]}
        defs = kv.schema_contents(
            f"kubernetes-json-schema/v{k8s_version}.0-local-strict/_definitions.json", k8s_version)
        registry = Resource.from_contents(defs) @ Registry()
        self.meta_validator = jsonschema.Draft202012Validator(
            {"$ref": f"{defs['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            registry=registry)
        self.report = report
        for name, version in self.versions.items():
            check_defaults(version["schema"]["openAPIV3Schema"], "", report,
                           f"CustomResourceDefinition {crd['metadata']['name']} {name}")

    def handles(self, obj):
        return group_of(obj) == self.group and obj.get("kind") == self.kind

    def validate(self, obj, where):
        report = self.report
        version = self.versions.get(obj["apiVersion"].split("/", 1)[1])
        if version is None or not version.get("served"):
            report.error(where, f"{obj['apiVersion']} is not a served version of the CRD")
            return
        structural = version["schema"]["openAPIV3Schema"]
        root = structural_to_jsonschema(structural)
        props = root.setdefault("properties", {})
        props.pop("metadata", None)
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = {"type": "object"}
        failed = False
        for err in sorted(jsonschema.Draft202012Validator(root).iter_errors(obj),
                          key=lambda e: list(map(str, e.path))):
            report.error(where, f"{'.'.join(map(str, err.path)) or '<root>'}: {err.message}")
            failed = True
        for err in self.meta_validator.iter_errors(obj.get("metadata") or {}):
            report.error(where, f"metadata.{'.'.join(map(str, err.path))}: {err.message}")
            failed = True
        if failed:
            return
        defaulted = copy.deepcopy(obj)
        defaulted["metadata"] = {k: v for k, v in obj["metadata"].items()
                                 if k in ("name", "generateName")}
        apply_defaults(structural, defaulted)
        rules = []
        cel_rules(structural, defaulted, "", rules)
        for path, rule, value in rules:
            if "oldSelf" in rule["rule"]:
                report.counts["CEL transition rules skipped (need an old object)"] += 1
                continue
            try:
                ok = cel.evaluate(rule["rule"], {"self": value})
            except Exception as e:  # noqa: BLE001 - the CEL library raises several types
                report.error(where, f"{path}: CEL rule {rule['rule']!r} could not be evaluated: {e}")
                continue
            report.counts["CEL rules evaluated"] += 1
            if ok is not True:
                report.error(where, f"{path}: {rule.get('message') or rule['rule']}")
        report.counts[f"{self.kind} validated against the CRD schema"] += 1


# --- per-object validation ------------------------------------------------------------------

def validate_object(obj, where, k8s_version, crds, report):
    group = group_of(obj)
    for crd in crds:
        if crd.handles(obj):
            crd.validate(obj, where)
            return
    try:
        kv.validate(obj, k8s_version, strict=True)
        report.counts[f"validated against the Kubernetes {k8s_version} schemas"] += 1
        return
    except kv.ValidationError as e:
        report.error(where, f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}")
        return
    except kv.SchemaNotFoundError:
        pass
    if group in SKIPPED_GROUPS:
        report.skipped.append(f"{where}: not schema-validated ({SKIPPED_GROUPS[group]})")
        report.counts["skipped (no schema here)"] += 1
        return
    report.error(where, f"no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes "
                        f"{k8s_version}, and not a known custom resource")


def check_names(obj, where, report):
    """What the apiserver validates beyond the JSON schemas: names and label syntax."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    kind = obj.get("kind")
    pattern, limit = (DNS1035_LABEL, 63) if kind == "Service" else (
        (DNS1123_LABEL, 63) if kind in ("Namespace", "Deployment", "StatefulSet", "DaemonSet")
        else (DNS1123_SUBDOMAIN, 253))
    if kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        report.check(bool(name) and "/" not in name and name not in (".", ".."), where,
                     f"invalid RBAC object name {name!r}")
    else:
        report.check(bool(pattern.match(name)) and len(name) <= limit, where,
                     f"invalid name {name!r} for a {kind}")
    for what, mapping in (("label", meta.get("labels") or {}), ("annotation", meta.get("annotations") or {})):
        for key, value in mapping.items():
            prefix, _, local = key.rpartition("/")
            report.check(bool(QUALIFIED_NAME.match(local)) and len(local) <= 63
                         and (not prefix or (DNS1123_SUBDOMAIN.match(prefix) and len(prefix) <= 253)),
                         where, f"invalid {what} key {key!r}")
            if what == "label":
                report.check(isinstance(value, str) and bool(LABEL_VALUE.match(value)) and len(value) <= 63,
                             where, f"invalid label value {key}={value!r}")
            else:
                report.check(isinstance(value, str), where, f"annotation {key} must be a string")


# --- cross-object checks --------------------------------------------------------------------

def pod_templates(objs):
    for obj in objs:
        if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield obj, obj["spec"]["template"]


def selects(selector, labels, plain=False):
    """Whether a LabelSelector (or, with plain, a Service's map selector) matches labels."""
    if not selector:
        return False
    match_labels = selector if plain else (selector.get("matchLabels") or {})
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in ([] if plain else selector.get("matchExpressions") or []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]) \
                or (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def container_ports(template):
    ports = {}
    spec = template["spec"]
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            if "name" in p:
                ports[p["name"]] = p["containerPort"]
    return ports


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(spec):
    """The Pod Security Standard "restricted" (its baseline part included) for a pod spec."""
    psc = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            yield f"{key} is not allowed"
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"volume {vol['name']} has a disallowed type {sorted(kinds - RESTRICTED_VOLUMES)}"
    if psc.get("runAsUser") == 0:
        yield "runAsUser 0"
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    for c in containers:
        sc = c.get("securityContext") or {}
        who = f"container {c['name']}"
        if sc.get("privileged"):
            yield f"{who}: privileged"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{who}: allowPrivilegeEscalation must be false"
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            yield f"{who}: capabilities must drop ALL"
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            yield f"{who}: only NET_BIND_SERVICE may be added"
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            yield f"{who}: runAsNonRoot must be true"
        if sc.get("runAsUser") == 0:
            yield f"{who}: runAsUser 0"
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"{who}: seccompProfile must be RuntimeDefault or Localhost"
        if any(p.get("hostPort") for p in c.get("ports") or []):
            yield f"{who}: hostPort is not allowed"


def cross_checks(name, objs, report):
    by_key = defaultdict(list)
    for obj in objs:
        by_key[(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])].append(obj)

    def find(kind, namespace, obj_name):
        return by_key.get((kind, namespace, obj_name), [None])[0]

    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    for key, found in by_key.items():
        report.check(len(found) == 1, name, f"{key[0]} {key[2]} defined {len(found)} times")
    for obj in objs:
        where = f"{name}: {ident(obj)}"
        check_names(obj, where, report)
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            report.check(ns is None, where, "cluster-scoped object with a namespace")
        else:
            report.check(ns is not None, where, "namespaced object without a namespace "
                                                "(set `namespace:` in the kustomization)")
            if namespaces:
                report.check(ns in namespaces, where, f"namespace {ns} is not created by this install")

    # Workloads: service accounts, volumes, probes, ports.
    for owner, template in pod_templates(objs):
        where = f"{name}: {ident(owner)}"
        ns = owner["metadata"].get("namespace")
        spec = template["spec"]
        report.check(selects(owner["spec"].get("selector"), template["metadata"].get("labels") or {}),
                     where, "the selector does not match the pod template's labels")
        sa = spec.get("serviceAccountName")
        if sa and sa != "default":
            report.check(find("ServiceAccount", ns, sa) is not None, where,
                         f"ServiceAccount {sa} is not part of this install")
        ports = container_ports(template)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in spec.get("containers") or []:
            report.check(bool(DNS1123_LABEL.match(c["name"])), where, f"invalid container name {c['name']!r}")
            for p in c.get("ports") or []:
                if "name" in p:
                    report.check(len(p["name"]) <= 15 and bool(PORT_NAME.match(p["name"]))
                                 and re.search("[a-z]", p["name"]) is not None, where,
                                 f"invalid port name {p['name']!r} (IANA service name, at most 15)")
            for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(probe_kind) or {}
                port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                if isinstance(port, str):
                    report.check(port in ports, where, f"{c['name']} {probe_kind} uses unknown port {port}")
            mounts = c.get("volumeMounts") or []
            for m in mounts:
                report.check(m["name"] in volumes, where, f"{c['name']} mounts undefined volume {m['name']}")
            # --tls-cert/--tls-key (and any absolute path argument) must be inside a mount.
            for arg in (c.get("args") or []):
                m = re.match(r"^--tls-(cert|key)=(/.+)$", arg)
                if m:
                    path = m.group(2)
                    mount = next((x for x in mounts if path.startswith(x["mountPath"].rstrip("/") + "/")), None)
                    if report.check(mount is not None, where, f"{arg}: no volume is mounted there"):
                        vol = volumes.get(mount["name"], {})
                        report.check("secret" in vol, where, f"{arg}: {mount['name']} is not a Secret volume")
                        report.check("subPath" not in mount, where,
                                     f"{arg}: a subPath mount never sees renewed certificates")
        for vol in volumes.values():
            if "configMap" in vol and not vol["configMap"].get("optional"):
                report.check(find("ConfigMap", ns, vol["configMap"]["name"]) is not None, where,
                             f"volume {vol['name']}: ConfigMap {vol['configMap']['name']} is not part of this install")
            if "secret" in vol and not vol["secret"].get("optional"):
                secret = vol["secret"]["secretName"]
                made_by = [o for o in objs if o["kind"] == "Certificate" and o["metadata"].get("namespace") == ns
                           and o["spec"].get("secretName") == secret]
                report.check(find("Secret", ns, secret) is not None or bool(made_by), where,
                             f"volume {vol['name']}: Secret {secret} is neither in this install nor made by a Certificate")

    # Services select pods and reach named ports.
    for svc in (o for o in objs if o["kind"] == "Service"):
        where = f"{name}: {ident(svc)}"
        ns = svc["metadata"].get("namespace")
        backends = [t for o, t in pod_templates(objs) if o["metadata"].get("namespace") == ns
                    and selects(svc["spec"].get("selector") or {}, t["metadata"].get("labels") or {}, plain=True)]
        if report.check(bool(backends), where, "the selector matches no pod template of this install"):
            for p in svc["spec"]["ports"]:
                if isinstance(p.get("targetPort"), str):
                    report.check(all(p["targetPort"] in container_ports(t) for t in backends), where,
                                 f"targetPort {p['targetPort']} is not a named port of the selected pods")

    for pdb in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        ns = pdb["metadata"].get("namespace")
        report.check(any(o["metadata"].get("namespace") == ns and selects(pdb["spec"]["selector"], t["metadata"].get("labels") or {})
                         for o, t in pod_templates(objs)), f"{name}: {ident(pdb)}", "selects no pod template")

    # RBAC bindings point at roles and service accounts of the install.
    for b in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        where = f"{name}: {ident(b)}"
        ref = b["roleRef"]
        role_ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        report.check(find(ref["kind"], role_ns, ref["name"]) is not None, where,
                     f"roleRef {ref['kind']} {ref['name']} is not part of this install")
        for s in b.get("subjects") or []:
            if s["kind"] == "ServiceAccount":
                report.check(find("ServiceAccount", s.get("namespace"), s["name"]) is not None, where,
                             f"subject ServiceAccount {s.get('namespace')}/{s['name']} is not part of this install")

    # Least privilege for the operator.
    for role in (o for o in objs if o["kind"] in ("ClusterRole", "Role") and o["metadata"]["name"] == OPERATOR):
        where = f"{name}: {ident(role)}"
        for rule in role.get("rules") or []:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                report.check("*" not in (rule.get(field) or []), where, f"wildcard in {field}: {rule}")
            if role["kind"] == "ClusterRole":
                report.check("secrets" not in rule.get("resources", []), where,
                             "Secrets must be granted in the operator's namespace only (Role), never cluster-wide")
            if rule.get("resourceNames"):
                report.check("create" not in rule["verbs"] and "deletecollection" not in rule["verbs"], where,
                             f"create/deletecollection cannot be restricted by resourceNames: {rule}")

    # The webhook configuration of DESIGN.md, and what it points at.
    for wh_conf in (o for o in objs if o["kind"] == "MutatingWebhookConfiguration"):
        where = f"{name}: {ident(wh_conf)}"
        report.check(wh_conf["metadata"]["name"] == WEBHOOK_CONFIGURATION, where,
                     f"the operator owns a MutatingWebhookConfiguration named {WEBHOOK_CONFIGURATION}")
        for wh in wh_conf.get("webhooks") or []:
            expect = {"failurePolicy": "Ignore", "sideEffects": "None", "reinvocationPolicy": "IfNeeded",
                      "timeoutSeconds": 3, "admissionReviewVersions": ["v1"]}
            for key, value in expect.items():
                report.check(wh.get(key) == value, where, f"{key} must be {value!r}, is {wh.get(key)!r}")
            # CREATE injects; UPDATE keeps the prometheus.io rewrite of injected pods (issue 21).
            report.check(any(sorted(r.get("operations") or []) == ["CREATE", "UPDATE"]
                             and "pods" in r.get("resources", [])
                             and r.get("apiGroups") == [""] for r in wh.get("rules") or []),
                         where, "must intercept pods CREATE and UPDATE (core/v1)")
            svc_ref = (wh.get("clientConfig") or {}).get("service")
            if report.check(svc_ref is not None, where, "clientConfig must name the operator's Service"):
                report.check(svc_ref.get("path") == "/mutate", where, "the webhook path is /mutate")
                svc = find("Service", svc_ref["namespace"], svc_ref["name"])
                if report.check(svc is not None, where, f"Service {svc_ref['namespace']}/{svc_ref['name']} is not part of this install"):
                    report.check(any(p["port"] == svc_ref.get("port", 443) for p in svc["spec"]["ports"]), where,
                                 f"Service {svc_ref['name']} has no port {svc_ref.get('port', 443)}")
                    excluded = [e for e in (wh.get("namespaceSelector") or {}).get("matchExpressions") or []
                                if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"]
                    values = excluded[0]["values"] if excluded else []
                    report.check("kube-system" in values and svc_ref["namespace"] in values, where,
                                 f"namespaceSelector must exclude kube-system and {svc_ref['namespace']}")
                    target = [t for o, t in pod_templates(objs) if o["metadata"].get("namespace") == svc["metadata"].get("namespace")
                              and selects(svc["spec"].get("selector") or {}, t["metadata"].get("labels") or {}, plain=True)]
                    for t in target:
                        port = next(p for p in svc["spec"]["ports"] if p["port"] == svc_ref.get("port", 443))
                        tp = port.get("targetPort", port["port"])
                        report.check(container_ports(t).get(tp, tp) == 8443, where,
                                     "the webhook Service port must reach container port 8443")
            inject = (wh_conf["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
            if inject:
                cert_ns, _, cert_name = inject.partition("/")
                cert = find("Certificate", cert_ns, cert_name)
                if report.check(cert is not None, where, f"inject-ca-from: Certificate {inject} is not part of this install"):
                    if svc_ref:
                        dns = f"{svc_ref['name']}.{svc_ref['namespace']}.svc"
                        report.check(dns in cert["spec"].get("dnsNames", []), f"{name}: {ident(cert)}",
                                     f"dnsNames must include {dns}")

    # cert-manager objects refer to each other correctly.
    for cert in (o for o in objs if o["kind"] == "Certificate"):
        ref = cert["spec"]["issuerRef"]
        if ref.get("kind", "Issuer") == "Issuer":
            report.check(find("Issuer", cert["metadata"].get("namespace"), ref["name"]) is not None,
                         f"{name}: {ident(cert)}", f"Issuer {ref['name']} is not part of this install")
    for issuer in (o for o in objs if o["kind"] == "Issuer" and "ca" in o["spec"]):
        ns = issuer["metadata"].get("namespace")
        report.check(any(o["kind"] == "Certificate" and o["metadata"].get("namespace") == ns and o["spec"].get("isCA")
                         and o["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"] for o in objs),
                     f"{name}: {ident(issuer)}", "its CA Secret is made by no isCA Certificate of this install")

    # The operator Deployment of DESIGN.md.
    op = find("Deployment", "monasca-system", OPERATOR)
    if op is not None:
        where = f"{name}: {ident(op)}"
        c = op["spec"]["template"]["spec"]["containers"][0]
        ports = container_ports(op["spec"]["template"])
        report.check(ports.get("webhook") == 8443 and ports.get("admin") == 8080, where,
                     "ports: webhook 8443 and admin 8080")
        report.check((c.get("livenessProbe") or {}).get("httpGet", {}).get("path") == "/healthz", where, "liveness /healthz")
        report.check((c.get("readinessProbe") or {}).get("httpGet", {}).get("path") == "/readyz", where, "readiness /readyz")
        env = {e["name"]: e for e in c.get("env") or []}
        report.check(env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                     == "metadata.namespace", where, "POD_NAMESPACE from the downward API")
        sc = c.get("securityContext") or {}
        psc = op["spec"]["template"]["spec"].get("securityContext") or {}
        report.check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                     and (sc.get("capabilities") or {}).get("drop") == ["ALL"]
                     and (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True
                     and ((sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"),
                     where, "restrictive securityContext")

    # Pod Security "restricted" where a namespace of the install enforces or warns about it: a
    # violation would only show on a cluster (pods refused, or warnings on every apply).
    restricted = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace" and "restricted" in (
        (o["metadata"].get("labels") or {}).get(f"pod-security.kubernetes.io/{mode}") for mode in ("enforce", "warn"))}
    for owner, template in pod_templates(objs):
        if owner["metadata"].get("namespace") in restricted:
            for problem in restricted_violations(template["spec"]):
                report.error(f"{name}: {ident(owner)}", f"Pod Security restricted: {problem}")
            report.counts["pod templates checked against Pod Security restricted"] += 1

    # Pods asking for injection name a MetricsSidecar that exists (DESIGN.md's selection rule).
    sidecars = defaultdict(set)
    for o in objs:
        if o["kind"] == "MetricsSidecar":
            sidecars[o["metadata"].get("namespace")].add(o["metadata"]["name"])
    for owner, template in pod_templates(objs):
        value = (template["metadata"].get("annotations") or {}).get(INJECT)
        if value is None or value == "false":
            continue
        ns = owner["metadata"].get("namespace")
        where = f"{name}: {ident(owner)}"
        if value == "true":
            report.check("default" in sidecars[ns] or len(sidecars[ns]) == 1, where,
                         f'{INJECT}: "true" needs a MetricsSidecar named default (or exactly one) in {ns}')
        else:
            report.check(value in sidecars[ns], where, f"{INJECT}: no MetricsSidecar {value!r} in {ns}")
        report.counts["inject annotations resolved"] += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", default="1.33")
    parser.add_argument("--crd", action="append", default=[], help="a CRD file custom resources are validated against")
    parser.add_argument("streams", nargs="+", help="NAME=FILE: a rendered multi-document YAML")
    args = parser.parse_args()
    version = args.kubernetes_version
    shipped = sorted({kv.major_minor(v) for v in kv.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    if version not in shipped:
        print(f"kubernetes-validate {kv.__version__} ships no schemas for Kubernetes {version} "
              f"(it has {', '.join(shipped)})", file=sys.stderr)
        return 2
    print(f"kubernetes-validate {kv.__version__}: schemas for Kubernetes {version} (strict)")

    report = Report()
    crds = []
    for path in args.crd:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    validate_object(doc, f"{path}: {ident(doc)}", version, [], report)
                    crds.append(CrdValidator(doc, version, report))
    for stream in args.streams:
        name, _, path = stream.partition("=")
        with open(path) as f:
            objs = [o for o in yaml.safe_load_all(f) if o]
        print(f"== {name}: {len(objs)} objects ({path})")
        before = len(report.errors)
        for obj in objs:
            where = f"{name}: {ident(obj)}"
            if not all(k in obj for k in ("apiVersion", "kind", "metadata")) or "name" not in obj["metadata"]:
                report.error(where, "apiVersion, kind and metadata.name are required")
                continue
            validate_object(obj, where, version, crds, report)
        cross_checks(name, objs, report)
        kinds = Counter(o["kind"] for o in objs)
        print("   " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        print(f"   {'ok' if len(report.errors) == before else 'FAILED'}")
    for line in report.skipped:
        print(f"  SKIP {line}")
    print("summary: " + "; ".join(f"{k}: {v}" for k, v in sorted(report.counts.items())))
    if report.errors:
        print(f"{len(report.errors)} problem(s) found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
