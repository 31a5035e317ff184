"""Kubernetes, as the configuration export reads it: a namespace's resources through
the official ``kubernetes`` client (an optional dependency, imported only when a kube
context is configured), behind the :class:`KubeSource` protocol, and
:func:`clean_resource`, which strips what the cluster sets so a resource can be
re-applied."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from payapi.core.errors import PayapiError


class KubeError(PayapiError):
    """The cluster could not be read; one line for the operator."""


# Metadata the cluster sets, which must not be re-applied (and churns on every export).
_DROP_METADATA = (
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_DROP_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",  # holds a Secret's values in clear
    "deployment.kubernetes.io/revision",
)


# --------------------------------------------------------------------------- kubernetes


def clean_resource(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """A resource as it can be re-applied: without ``status`` and what the cluster sets.

    None for what the cluster makes by itself (objects owned by a controller, service
    account tokens, the ``kube-root-ca.crt`` ConfigMap): restoring those would fight it.
    """
    doc: dict[str, Any] = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(doc.get("metadata") or {})
    if meta.get("ownerReferences"):
        return None
    kind = doc.get("kind")
    if kind == "Secret" and doc.get("type") == "kubernetes.io/service-account-token":
        return None
    if kind == "ConfigMap" and meta.get("name") == "kube-root-ca.crt":
        return None
    for key in _DROP_METADATA:
        meta.pop(key, None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    doc["metadata"] = meta
    if kind == "Service" and isinstance(doc.get("spec"), dict):
        spec = dict(doc["spec"])
        if spec.get("clusterIP") not in (None, "None"):  # assigned by the cluster
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        doc["spec"] = spec
    return doc


class KubeSource(Protocol):
    """Where the namespace's resources come from (the cluster, or a test double)."""

    @property
    def description(self) -> str: ...

    def resources(self, namespace: str) -> Iterable[Mapping[str, Any]]: ...


# (apiVersion, kind, API class, list method) for what a namespace's configuration is.
_KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("v1", "ConfigMap", "CoreV1Api", "list_namespaced_config_map"),
    ("v1", "Secret", "CoreV1Api", "list_namespaced_secret"),
    ("v1", "Service", "CoreV1Api", "list_namespaced_service"),
    ("v1", "ServiceAccount", "CoreV1Api", "list_namespaced_service_account"),
    ("v1", "PersistentVolumeClaim", "CoreV1Api", "list_namespaced_persistent_volume_claim"),
    ("apps/v1", "Deployment", "AppsV1Api", "list_namespaced_deployment"),
    ("apps/v1", "StatefulSet", "AppsV1Api", "list_namespaced_stateful_set"),
    ("apps/v1", "DaemonSet", "AppsV1Api", "list_namespaced_daemon_set"),
    ("batch/v1", "CronJob", "BatchV1Api", "list_namespaced_cron_job"),
    ("batch/v1", "Job", "BatchV1Api", "list_namespaced_job"),
    ("networking.k8s.io/v1", "Ingress", "NetworkingV1Api", "list_namespaced_ingress"),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "NetworkingV1Api",
        "list_namespaced_network_policy",
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "RbacAuthorizationV1Api", "list_namespaced_role"),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "RbacAuthorizationV1Api",
        "list_namespaced_role_binding",
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "AutoscalingV2Api",
        "list_namespaced_horizontal_pod_autoscaler",
    ),
    ("policy/v1", "PodDisruptionBudget", "PolicyV1Api", "list_namespaced_pod_disruption_budget"),
)


class OfficialKubeSource:
    """The namespace's resources through the official ``kubernetes`` client (imported only
    here, when a context is configured; it is an optional dependency)."""

    def __init__(self, context: str, config_file: Path | None = None) -> None:
        try:
            k8s: Any = importlib.import_module("kubernetes")
        except ImportError:
            raise KubeError(
                "a kube context is configured but the kubernetes client is not installed "
                "(pip install kubernetes)"
            ) from None
        self._k8s = k8s
        self.context = context
        try:
            self._api = k8s.config.new_client_from_config(
                config_file=str(config_file) if config_file else None,
                context=context,
                persist_config=False,  # a backup never rewrites the operator's kubeconfig
            )
        except Exception as exc:  # ConfigException and friends
            raise KubeError(f"kube context {context!r}: {exc}") from None
        self.skipped: list[str] = []

    @property
    def description(self) -> str:
        return f"kube context {self.context}"

    def resources(self, namespace: str) -> Iterable[Mapping[str, Any]]:
        k8s = self._k8s
        api_exc = k8s.client.exceptions.ApiException
        core = k8s.client.CoreV1Api(self._api)
        try:
            ns = core.read_namespace(namespace)
        except api_exc as exc:
            raise KubeError(f"namespace {namespace}: {exc.status} {exc.reason}") from None
        doc = self._api.sanitize_for_serialization(ns)
        doc.update(apiVersion="v1", kind="Namespace")
        yield doc
        for api_version, kind, api_class, method in _KINDS:
            api = getattr(k8s.client, api_class)(self._api)
            try:
                listing = getattr(api, method)(namespace)
            except api_exc as exc:
                if exc.status in (403, 404):  # not allowed, or not served by this cluster
                    self.skipped.append(f"{kind}: {exc.status} {exc.reason}")
                    continue
                raise KubeError(f"listing {kind}: {exc.status} {exc.reason}") from None
            for item in listing.items:
                doc = self._api.sanitize_for_serialization(item)
                doc.update(apiVersion=api_version, kind=kind)
                yield doc
