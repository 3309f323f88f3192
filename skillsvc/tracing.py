"""OpenTelemetry set-up from the SDK's standard ``OTEL_*`` variables.

``skillsvc serve`` calls :func:`configure_tracing` with its environment. Tracing is on
when ``OTEL_TRACES_EXPORTER`` names exporters (comma-separated: ``otlp``, ``console``,
or any exporter installed under the SDK's ``opentelemetry_traces_exporter`` entry
points), or when it is unset and an OTLP endpoint is configured
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). It is off
with ``OTEL_TRACES_EXPORTER=none``, with ``OTEL_SDK_DISABLED=true``, and when nothing is
configured (the SDK's own default, ``otlp``, would export to a collector that may not
exist; see the README). ``otlp`` follows ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` /
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default, or ``http/protobuf``) and needs
the ``skillsvc[otlp]`` extra. Everything else — endpoint, headers, service name and
resource attributes, sampler, batch sizes — the SDK reads from its own variables.

Without a configured provider the API's no-op tracer makes spans nearly free, and an
application embedding skillsvc may install its own provider instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Final

_ENTRY_POINTS: Final = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL: Final = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable names an exporter that cannot be used."""


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The entry-point names of the span exporters ``env`` asks for (empty: tracing off)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER")
    if raw is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        raw = "otlp" if endpoint else "none"
    names = []
    for name in (part.strip().lower() for part in raw.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            protocol = (
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc"
            ).strip()
            if protocol not in _OTLP_BY_PROTOCOL:
                raise TracingConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf"
                )
            names.append(_OTLP_BY_PROTOCOL[protocol])
        else:
            names.append(name)
    return names


def _exporter(name: str) -> Any:
    found = entry_points(group=_ENTRY_POINTS, name=name)
    if not found:
        hint = " (install skillsvc[otlp])" if name.startswith("otlp") else ""
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed{hint}"
        )
    return next(iter(found)).load()()


def configure_tracing(env: Mapping[str, str]) -> Any | None:
    """Install an SDK tracer provider exporting where ``env`` says; None when off.

    Returns the provider, whose ``shutdown()`` flushes the spans still batched (the
    CLI calls it on exit).
    """
    names = exporter_names(env)
    if not names:
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_exporter(name) for name in names]
    attributes = {}
    if "OTEL_SERVICE_NAME" not in env and "service.name=" not in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes[SERVICE_NAME] = "skillsvc"
    # The sampler (OTEL_TRACES_SAMPLER) and the resource (OTEL_SERVICE_NAME,
    # OTEL_RESOURCE_ATTRIBUTES) are read by the SDK itself.
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
