"""The ``[models]`` section of ``crewline.toml``, parsed into typed, immutable config.

[models]
default = "cheap"                       # used when a call names no model (default: "local")
strict_prices = false                   # true: refuse calls to models with no known price
timeout = "60s"
max_tokens = 1024                       # default completion budget (also what a reservation assumes)
overflow = "truncate"                   # a ctx.llm request over the window: truncate | summarize | fail
output_retries = 1                      # re-asks after a structured output fails validation

[models.aliases]
fast = "openai/gpt-4o-mini"                                 # one target
smart = ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]    # a fallback chain
gpt4o = { balance = ["east", "west"], fallback = ["openai/gpt-4o"] }   # balanced deployments

[models.tiers]                          # aliases with an order, for escalation; without this section
                                        # the one tier is "local": SmolLM2 served by llama.cpp
order = ["local", "cheap", "strong"]
cheap = "openai/gpt-4o-mini"
strong = "anthropic/claude-sonnet-4-5"

[models.providers.east]                 # who authenticates; format = which wire format
format = "openai"
base_url = "https://east.example.com/v1"
api_key_env = "EAST_API_KEY"

[models.deployments.east]               # a named deployment with its own limits
provider = "east"
model = "gpt-4o"
rpm = 600
tpm = 150000
weight = 2

[models.budgets]                        # USD; day and month are global
day = 10
month = 200
run = 0.5
workflow = { triage = 1.0 }
key = { alice = 5 }

[models.prices."east/gpt-4o"]           # USD per million tokens
input = 2.5
output = 10
context = 128000                        # the context window in tokens (ctx.llm keeps requests within it)

[models.cache]  enabled = true, ttl = "1d"
[models.retry]  attempts = 3, base_delay = "250ms", max_delay = "8s", max_retry_after = "30s"
[models.breaker] window = 20, min_calls = 5, error_ratio = 0.5, cooldown = "30s"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from ..config import check_header_value, check_http_url, did_you_mean, parse_duration
from ..errors import ConfigError

__all__ = [
    "BUILTIN_PROVIDERS",
    "OVERFLOW_POLICIES",
    "BreakerConfig",
    "BudgetConfig",
    "CacheConfig",
    "DeploymentConfig",
    "ModelsConfig",
    "Overflow",
    "ProviderConfig",
    "RetryConfig",
    "Target",
    "models_problems",
]


@dataclass(frozen=True)
class ProviderConfig:
    """Who authenticates: a wire format, a base URL and where the key comes from (never the key itself)."""

    name: str
    format: str
    base_url: str
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    free: bool = False  # self-hosted: every model costs $0, a known price
    options: Mapping[str, Any] = field(default_factory=dict)


BUILTIN_PROVIDERS: Mapping[str, ProviderConfig] = {
    p.name: p
    for p in (
        # OpenAI's reasoning models refuse max_tokens; every current OpenAI model takes the newer field.
        ProviderConfig(
            "openai",
            "openai",
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
            options={"max_tokens_field": "max_completion_tokens"},
        ),
        ProviderConfig("anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        ProviderConfig(
            "gemini", "gemini", "https://generativelanguage.googleapis.com/v1beta", "GEMINI_API_KEY"
        ),
        ProviderConfig("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        ProviderConfig("deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        ProviderConfig("openrouter", "openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        ProviderConfig("together", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        ProviderConfig("mistral", "openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        ProviderConfig("ollama", "ollama", "http://127.0.0.1:11434", None, free=True),
        ProviderConfig("vllm", "openai", "http://127.0.0.1:8000/v1", None, free=True),
        ProviderConfig("llamacpp", "openai", "http://127.0.0.1:8080/v1", None, free=True),
        ProviderConfig("local", "local", "http://127.0.0.1/v1", None, free=True),
    )
}


# What ctx.llm does with a request larger than the model's context window (see flows/fit.py).
Overflow = Literal["truncate", "summarize", "fail"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = get_args(Overflow)

# The model that needs no key: SmolLM2 served by llama.cpp (the ``crewline[local]`` extra).
LOCAL_TARGET = "local/smollm2"

# Keys allowed directly under [models]; anything else is a typo worth an error.
_MODELS_KEYS = {
    "providers",
    "deployments",
    "aliases",
    "tiers",
    "default",
    "budgets",
    "prices",
    "strict_prices",
    "overflow",
    "cache",
    "retry",
    "breaker",
    "timeout",
    "max_tokens",
    "output_retries",
    "record_payloads",
    "payload_threshold",
}


@dataclass(frozen=True)
class DeploymentConfig:
    """One place a model is served, with its own limits; ``weight`` biases balancing."""

    name: str
    provider: str
    model: str
    rpm: int | None = None
    tpm: int | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Target:
    """What an alias stands for: fallback steps, each a pool of deployment references balanced together."""

    steps: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class BudgetConfig:
    day: float | None = None
    month: float | None = None
    run: float | None = None
    workflow: Mapping[str, float] = field(default_factory=dict)
    key: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 3  # per fallback step, the first try included
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 30.0  # a longer retry-after moves on to the fallback instead of waiting


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20
    min_calls: int = 5
    error_ratio: float = 0.5
    cooldown: float = 30.0


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    ttl: float = 86400.0


@dataclass(frozen=True)
class ModelsConfig:
    providers: Mapping[str, ProviderConfig] = field(default_factory=lambda: dict(BUILTIN_PROVIDERS))
    # The providers named under [models.providers]: only these are offered as provider/model to callers
    # from outside the app (the proxy); the built-in ones stay available to the app's own code.
    declared_providers: frozenset[str] = frozenset()
    deployments: Mapping[str, DeploymentConfig] = field(default_factory=dict)
    aliases: Mapping[str, Target] = field(default_factory=lambda: {"local": Target(((LOCAL_TARGET,),))})
    tier_order: tuple[str, ...] = ("local",)
    default: str | None = "local"
    budgets: BudgetConfig = field(default_factory=BudgetConfig)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    strict_prices: bool = False
    cache: CacheConfig = field(default_factory=CacheConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    timeout: float = 60.0
    max_tokens: int = 1024
    overflow: Overflow = "truncate"
    output_retries: int = 1
    record_payloads: bool = True
    payload_threshold: int = 4096

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> ModelsConfig:
        """Typed config from the raw ``[models]`` table; every mistake is a :class:`ConfigError` naming the key."""
        raw = dict(raw or {})
        _no_unknown("models", raw, _MODELS_KEYS)
        providers = dict(BUILTIN_PROVIDERS)
        declared = _table(raw, "providers")
        for name, table in declared.items():
            providers[name] = _provider(name, _sub(f"models.providers.{name}", table), providers.get(name))
        deployments = {
            n: _deployment(n, _sub(f"models.deployments.{n}", t))
            for n, t in _table(raw, "deployments").items()
        }
        aliases = {n: _target(f"models.aliases.{n}", v) for n, v in _table(raw, "aliases").items()}
        order = _tiers(raw, aliases)
        return cls(
            providers=providers,
            declared_providers=frozenset(declared),
            deployments=deployments,
            aliases=aliases,
            tier_order=tuple(order),
            default=_opt(raw, "default", str, "models") or "local",
            budgets=_budgets(_table(raw, "budgets")),
            prices={k: _price(k, v) for k, v in _table(raw, "prices").items()},
            strict_prices=bool(_opt(raw, "strict_prices", bool, "models") or False),
            cache=_cache(_table(raw, "cache")),
            retry=_retry(_table(raw, "retry")),
            breaker=_breaker(_table(raw, "breaker")),
            timeout=_duration(raw, "timeout", 60.0, "models"),
            max_tokens=_positive_int(raw, "max_tokens", 1024, "models"),
            overflow=_overflow(raw.get("overflow", "truncate"), "[models] overflow"),
            output_retries=_nonneg_int(raw, "output_retries", 1, "models"),
            record_payloads=bool(raw.get("record_payloads", True)),
            payload_threshold=_nonneg_int(raw, "payload_threshold", 4096, "models"),
        )


def models_problems(raw: Any) -> list[str]:
    """Every problem of a raw ``[models]`` table, not just the first: each key is parsed on its own, then
    each name an alias, tier, deployment or the default points to must lead to a configured provider."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return ["[models] must be a table"]
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        # tiers may name aliases, so they are read with the aliases (when those are sound)
        part = {
            key: value,
            **({"aliases": parsed["aliases"]} if key == "tiers" and "aliases" in parsed else {}),
        }
        try:
            ModelsConfig.parse(part)
        except ConfigError as e:
            problems.append(str(e))
        else:
            parsed[key] = value
    config = ModelsConfig.parse(parsed)  # what names point to, among the keys that are sound
    return [*problems, *_dangling(config), *_unreachable_default(config)]


def _dangling(config: ModelsConfig) -> list[str]:
    problems = [
        f"[models.deployments.{d.name}] provider {d.provider!r} is not a configured provider"
        f"{did_you_mean(d.provider, config.providers)}; known: {', '.join(sorted(config.providers))}"
        for d in config.deployments.values()
        if d.provider not in config.providers
    ]
    for alias, target in config.aliases.items():
        for ref in (r for pool in target.steps for r in pool):
            if ref in config.aliases or ref in config.deployments:
                continue
            provider, sep, model = ref.partition("/")
            if not sep or not model:
                problems.append(
                    f"[models] {alias} = {ref!r}: not an alias, tier or deployment; "
                    f'use "provider/model" (e.g. "openai/gpt-4o-mini") or a name defined under [models]'
                )
            elif provider not in config.providers:
                problems.append(
                    f"[models] {alias} = {ref!r}: provider {provider!r} is not configured"
                    f"{did_you_mean(provider, config.providers)}; known: {', '.join(sorted(config.providers))}, "
                    f"or add [models.providers.{provider}]"
                )
    return problems


def _unreachable_default(config: ModelsConfig) -> list[str]:
    default = config.default or "local"
    if default in config.aliases or default in config.deployments:
        return []
    provider, sep, _ = default.partition("/")
    if sep and provider in config.providers:
        return []
    return [
        f"[models] default = {default!r} is not an alias, tier, deployment or provider/model"
        f"{did_you_mean(default, [*config.aliases, *config.deployments])}"
    ]


def _tiers(raw: Mapping[str, Any], aliases: dict[str, Target]) -> list[str]:
    """Add ``[models.tiers]`` to ``aliases`` and return the tier order (just ``local`` without tiers)."""
    tiers = dict(_table(raw, "tiers"))
    order = tiers.pop("order", None) or list(tiers)
    if not isinstance(order, list) or not all(isinstance(t, str) for t in order):
        raise ConfigError(
            '[models.tiers] order must be a list of tier names, e.g. ["local", "cheap", "strong"]'
        )
    for name, value in tiers.items():
        aliases[name] = _target(f"models.tiers.{name}", value)
    if "tiers" not in raw:
        order = ["local"]
    aliases.setdefault("local", Target(((LOCAL_TARGET,),)))
    for name in order:
        if name not in aliases:
            raise ConfigError(
                f"[models.tiers] order names {name!r}, which is not defined under [models.tiers]"
            )
    return order


def _no_unknown(where: str, table: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        hints = "".join(did_you_mean(k, known) for k in extra)
        raise ConfigError(
            f"[{where}] has unknown key(s) {', '.join(extra)}{hints}; known: {', '.join(sorted(known))}"
        )


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[models] {key} must be a table, got {type(value).__name__}")
    return dict(value)


def _sub(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    return dict(value)


def _opt(raw: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"[{where}] {key} must be a {kind.__name__}, got {value!r}")
    return value


def _duration(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    if key not in raw:
        return default
    try:
        return parse_duration(raw[key])
    except ConfigError as e:
        raise ConfigError(f"[{where}] {key}: {e}") from None


def _positive_int(raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"[{where}] {key} must be a positive integer, got {value!r}")
    return value


def _nonneg_int(raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"[{where}] {key} must be an integer >= 0, got {value!r}")
    return value


def _money(where: str, value: Any) -> float:
    # TOML reads nan and inf as floats; the ledger could not count them in nano-USD
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{where} must be an amount in USD >= 0 (a number, e.g. 5 or 0.5), got {value!r}")
    return float(value)


def _provider(name: str, t: dict[str, Any], base: ProviderConfig | None) -> ProviderConfig:
    where = f"models.providers.{name}"
    _no_unknown(where, t, {"format", "base_url", "api_key_env", "headers", "timeout", "free", "options"})
    fmt = t.get("format", base.format if base else None)
    url = t.get("base_url", base.base_url if base else None)
    if not isinstance(fmt, str) or not isinstance(url, str):
        raise ConfigError(
            f"[{where}] needs format (openai, openai-responses, anthropic, gemini, ollama, local) and base_url"
        )
    key_env = t.get("api_key_env", base.api_key_env if base else None)
    headers = {str(k): str(v) for k, v in _sub(f"{where}.headers", t.get("headers", {})).items()}
    return ProviderConfig(
        name=name,
        format=fmt,
        base_url=check_http_url(url, f"[{where}] base_url"),
        api_key_env=key_env or None,
        headers={k: check_header_value(k, v, f"[{where}.headers]") for k, v in headers.items()},
        timeout=_duration(t, "timeout", 0.0, where) or None,
        free=bool(t.get("free", base.free if base else False)),
        options={**(base.options if base else {}), **_sub(f"{where}.options", t.get("options", {}))},
    )


def _deployment(name: str, t: dict[str, Any]) -> DeploymentConfig:
    where = f"models.deployments.{name}"
    _no_unknown(where, t, {"provider", "model", "rpm", "tpm", "weight"})
    provider, model = t.get("provider"), t.get("model")
    if not isinstance(provider, str) or not isinstance(model, str):
        raise ConfigError(f'[{where}] needs provider and model, e.g. provider = "openai", model = "gpt-4o"')
    rpm = t.get("rpm")
    tpm = t.get("tpm")
    for key, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"[{where}] {key} must be a positive integer, got {value!r}")
    weight = t.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ConfigError(f"[{where}] weight must be a number > 0, got {weight!r}")
    return DeploymentConfig(name, provider, model, rpm, tpm, float(weight))


def _target(where: str, value: Any) -> Target:
    if isinstance(value, str):
        return Target(((value,),))
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return Target(tuple((v,) for v in value))
    if isinstance(value, Mapping):
        _no_unknown(where, value, {"balance", "fallback"})
        pool = value.get("balance")
        fallback = value.get("fallback", [])
        if not isinstance(pool, list) or not pool or not all(isinstance(v, str) for v in pool):
            raise ConfigError(
                f"[{where}] balance must be a non-empty list of deployments or provider/model names"
            )
        if not isinstance(fallback, list) or not all(isinstance(v, str) for v in fallback):
            raise ConfigError(f"[{where}] fallback must be a list of names")
        return Target((tuple(pool), *((v,) for v in fallback)))
    raise ConfigError(f"[{where}] must be a name, a list of names (fallback chain) or {{ balance = [...] }}")


def _budgets(t: dict[str, Any]) -> BudgetConfig:
    _no_unknown("models.budgets", t, {"day", "month", "run", "workflow", "key"})

    def one(key: str) -> float | None:
        return None if t.get(key) is None else _money(f"[models.budgets] {key}", t[key])

    def many(key: str) -> dict[str, float]:
        return {
            n: _money(f"[models.budgets.{key}] {n}", v)
            for n, v in _sub(f"models.budgets.{key}", t.get(key, {})).items()
        }

    return BudgetConfig(one("day"), one("month"), one("run"), many("workflow"), many("key"))


_PRICE_KEYS = {"input", "output", "cache_read", "cache_write", "reasoning", "context"}


def _price(name: str, value: Any) -> dict[str, float]:
    where = f'models.prices."{name}"'
    t = _sub(where, value)
    _no_unknown(where, t, _PRICE_KEYS)
    priced = {k: v for k, v in t.items() if k != "context"}
    if priced and ("input" not in t or "output" not in t):
        raise ConfigError(f"[{where}] needs input and output (USD per million tokens)")
    if not t:
        raise ConfigError(f"[{where}] needs input and output (USD per million tokens), or a context")
    entry = {k: _money(f"[{where}] {k}", v) for k, v in priced.items()}
    if "context" in t:
        entry["context"] = _positive_int(t, "context", 0, where)
    return entry


def _overflow(value: Any, where: str) -> Overflow:
    if value not in OVERFLOW_POLICIES:
        raise ConfigError(f"{where} must be one of {', '.join(OVERFLOW_POLICIES)}, got {value!r}")
    return cast(Overflow, value)


def _cache(t: dict[str, Any]) -> CacheConfig:
    _no_unknown("models.cache", t, {"enabled", "ttl"})
    return CacheConfig(bool(t.get("enabled", True)), _duration(t, "ttl", 86400.0, "models.cache"))


def _retry(t: dict[str, Any]) -> RetryConfig:
    _no_unknown("models.retry", t, {"attempts", "base_delay", "max_delay", "max_retry_after"})
    return RetryConfig(
        _positive_int(t, "attempts", 3, "models.retry"),
        _duration(t, "base_delay", 0.25, "models.retry"),
        _duration(t, "max_delay", 8.0, "models.retry"),
        _duration(t, "max_retry_after", 30.0, "models.retry"),
    )


def _breaker(t: dict[str, Any]) -> BreakerConfig:
    _no_unknown("models.breaker", t, {"window", "min_calls", "error_ratio", "cooldown"})
    ratio = t.get("error_ratio", 0.5)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise ConfigError(f"[models.breaker] error_ratio must be in (0, 1], got {ratio!r}")
    return BreakerConfig(
        _positive_int(t, "window", 20, "models.breaker"),
        _positive_int(t, "min_calls", 5, "models.breaker"),
        float(ratio),
        _duration(t, "cooldown", 30.0, "models.breaker"),
    )
