#!/usr/bin/env python3
"""Validates docker/k8s/ without a cluster: every document parses, has the fields its kind
needs, and the references between objects hold (selectors match pod labels, Services point at
named container ports, volumes name ConfigMaps/Secrets/PVCs that exist, mounts name volumes,
kustomization lists every file). With TERN_BIN set, the `tern` command lines of the containers
are checked against the real CLI's --help."""
import glob
import os
import subprocess
import sys
import unittest

import yaml

ROOT = os.environ.get("TERN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "docker", "k8s")


def load_all():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    docs.append((os.path.basename(path), d))
    return docs


def pod_specs(docs):
    for name, d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield name, d, d["spec"]["template"]


class K8sManifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_all()
        cls.by_kind = {}
        for _, d in cls.docs:
            cls.by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    def test_every_document_is_well_formed(self):
        self.assertGreater(len(self.docs), 5)
        for name, d in self.docs:
            for field in ("apiVersion", "kind", "metadata"):
                self.assertIn(field, d, f"{name}: {field} missing")
            self.assertIn("name", d["metadata"], f"{name}: metadata.name missing")
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), "tern", f"{name}: {d['metadata']['name']} namespace")

    def test_workload_selectors_match_their_pod_labels(self):
        for name, d, tmpl in pod_specs(self.docs):
            sel = d["spec"]["selector"]["matchLabels"]
            labels = tmpl["metadata"]["labels"]
            for k, v in sel.items():
                self.assertEqual(labels.get(k), v, f"{name}: selector {k}={v} does not match the pod template")

    def test_services_select_pods_and_named_ports_exist(self):
        for sname, svc in self.by_kind.get("Service", {}).items():
            selected = [(n, t) for n, _, t in pod_specs(self.docs)
                        if all(t["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items())]
            self.assertTrue(selected, f"Service {sname} selects no pods")
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                for n, t in selected:
                    names = {p.get("name") for c in t["spec"]["containers"] for p in c.get("ports", [])}
                    nums = {p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
                    self.assertTrue(target in names or target in nums, f"Service {sname}: port {target} not in {n}")

    def test_volumes_reference_existing_objects_and_mounts_reference_volumes(self):
        cms = self.by_kind.get("ConfigMap", {})
        secrets = self.by_kind.get("Secret", {})
        pvcs = self.by_kind.get("PersistentVolumeClaim", {})
        for name, d, tmpl in pod_specs(self.docs):
            vols = {v["name"]: v for v in tmpl["spec"].get("volumes", [])}
            claims = {c["metadata"]["name"] for c in d["spec"].get("volumeClaimTemplates", [])}
            for v in vols.values():
                if "configMap" in v:
                    self.assertIn(v["configMap"]["name"], cms, f"{name}: ConfigMap {v['configMap']['name']}")
                if "secret" in v:
                    self.assertIn(v["secret"]["secretName"], secrets, f"{name}: Secret {v['secret']['secretName']}")
                if "persistentVolumeClaim" in v:
                    self.assertIn(v["persistentVolumeClaim"]["claimName"], pvcs, f"{name}: PVC")
            for c in tmpl["spec"]["containers"]:
                for m in c.get("volumeMounts", []):
                    self.assertTrue(m["name"] in vols or m["name"] in claims, f"{name}: mount {m['name']} has no volume")

    def test_workers_request_gpus_and_coordinator_keeps_its_journal(self):
        workers = [d for _, d, _ in pod_specs(self.docs) if d["kind"] == "StatefulSet"]
        self.assertTrue(workers)
        for w in workers:
            res = w["spec"]["template"]["spec"]["containers"][0]["resources"]
            self.assertIn("nvidia.com/gpu", res["limits"])
        coord = self.by_kind["Deployment"]["tern-coordinator"]
        self.assertEqual(coord["spec"]["replicas"], 1)
        self.assertEqual(coord["spec"]["strategy"]["type"], "Recreate")
        c = coord["spec"]["template"]["spec"]["containers"][0]
        self.assertIn("readinessProbe", c)
        self.assertIn("livenessProbe", c)
        cluster = yaml.safe_load(self.by_kind["ConfigMap"]["tern-cluster"]["data"]["cluster.yaml"])
        journal_mount = [m for m in c["volumeMounts"] if m["name"] == "journal"][0]["mountPath"]
        self.assertTrue(cluster["state_dir"].startswith(journal_mount), "the journal must live on the PVC")

    def test_kustomization_lists_every_manifest(self):
        with open(os.path.join(K8S, "kustomization.yaml")) as f:
            k = yaml.safe_load(f)
        files = {os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))} - {"kustomization.yaml"}
        self.assertEqual(set(k["resources"]), files)

    @unittest.skipUnless(os.environ.get("TERN_BIN_DIR"), "TERN_BIN_DIR not set")
    def test_container_commands_use_real_cli_flags(self):
        tern = os.path.join(os.environ["TERN_BIN_DIR"], "tern")
        if not os.access(tern, os.X_OK):
            self.skipTest("tern not built")
        for name, _, tmpl in pod_specs(self.docs):
            for c in tmpl["spec"]["containers"]:
                probes = [c.get(p, {}).get("exec", {}).get("command") for p in ("readinessProbe", "livenessProbe")]
                for cmd in [c["command"]] + [p for p in probes if p]:
                    self.assertEqual(cmd[0], "tern")
                    sub = cmd[1]
                    help_text = subprocess.run([tern, sub, "--help"], capture_output=True, text=True).stdout
                    for arg in cmd[2:]:
                        if arg.startswith("--"):
                            self.assertIn(arg, help_text, f"{name}: `tern {sub}` has no {arg}")


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False).result.wasSuccessful() else 1)
