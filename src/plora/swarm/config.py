"""Swarm configuration: one validated object per command, every field documented; the CLI options are built from it.

    >>> from plora.swarm.config import NetConfig, SimConfig
    >>> cfg = SimConfig(agents=6, rounds=5, graph_p=0.25, security="on", trojan_rate=0.3)
    >>> cfg.domains, cfg.security, cfg.allowed_ranks   # allowed_ranks None: the policy file's, else Policy's
    (('arithmetic', 'legal', 'medical', 'science'), True, None)
    >>> NetConfig().seed == SimConfig().seed and NetConfig().trojan_rate == SimConfig().trojan_rate
    True

:class:`SwarmConfig` holds what the in-process simulation (:class:`SimConfig`, ``plora swarm sim`` /
``python -m swarm_v2``) and the networked swarm (:class:`NetConfig`, ``plora swarm net``) share, so the two commands
have one set of defaults: the same flags and seed give the same overlay, roles and policy. The gate fields
(``allowed_ranks``, ``allowed_targets``, ``signatures``, ``tau_*``) default to None, "not given": the policy is
:class:`plora.gate.policy.Policy`'s defaults, then ``--policy_file``, then only the gate flags the user gave.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plora.errors import PloraError
from plora.gate.policy import Policy

DEFAULT_DOMAINS = ("arithmetic", "legal", "medical", "science")


def _gate(name: str, description: str | None = None) -> Any:
    """A gate setting: None unless given (a policy file keeps its value); its help and default live in Policy."""
    return Field(
        default=None,
        description=description or Policy.model_fields[name].description,
        json_schema_extra={"policy_field": name},
    )


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def on_off(value: Any) -> Any:
    """A flag's ``on``/``off`` (any case) as a bool; anything else that is a string is refused; other values pass."""
    if isinstance(value, str):
        if value.strip().lower() not in {"on", "off"}:
            raise ValueError(f"must be on or off, got {value!r}")
        return value.strip().lower() == "on"
    return value


class SwarmConfig(BaseModel):
    """The flags ``plora swarm sim`` and ``plora swarm net`` share (their defaults live here, once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: int = Field(default=6, ge=1, le=100_000_000, description="number of agents")
    rounds: int = Field(
        default=50, ge=1, description="maximum rounds; the run stops earlier once nothing can change any more"
    )
    seed: int = Field(
        default=0, ge=0, description="seeds the graph, the trojan draw, the sources and every contact"
    )
    graph_p: float = Field(default=0.25, ge=0, le=1, description="Erdős–Rényi edge probability (mean degree p (N-1))")
    domains: tuple[str, ...] = Field(default=DEFAULT_DOMAINS, min_length=1, description="plasmid domains")
    trojan_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of agents (drawn by seed) that start with a trojan plasmid"
    )
    security: bool = Field(default=True, description="on: screen every received plasmid with the gate")
    allowed_targets: Literal["attention", "mlp", "all"] | None = _gate(
        "allowed_targets", "gate: LoRA target set allowed (attention, mlp or all)"
    )
    allowed_ranks: tuple[int, ...] | None = _gate("allowed_ranks", "gate: LoRA ranks allowed, e.g. 4,8,16")
    signatures: bool | None = _gate("signatures", "gate: on to require a signature by a trusted key")
    trusted_pubkeys: tuple[str, ...] = Field(
        default=(), description="gate: trusted public key files, p1,p2 (turns signatures on, as plora gate "
        "--trusted-keys does; default with signatures: the pool's swarm key)"
    )
    policy_file: str | None = Field(default=None, description="gate policy JSON; gate flags you give override it")
    tau_trigger: float | None = _gate("tau_trigger")
    tau_norm_z: float | None = _gate("tau_norm_z")
    tau_clean_delta: float | None = _gate("tau_clean_delta")
    revoke_at: int | None = Field(
        default=None,
        ge=1,
        description="at the start of this round one honest agent issues revocations (signed by the swarm key) of "
        "the trojans the gate lets through; the report adds holding/injecting shares, time to purge, peak, exposure",
    )
    peer_scoring: bool | None = Field(
        default=None,
        description="on: peers lose score for rejected or revoked offers and are graylisted below the threshold "
        "(default: the policy's recall.peer_scoring, off)",
    )
    report_dir: str = Field(default="results", description="folder for the report JSON and coverage PNG")
    pool_dir: str | None = Field(
        default=None,
        description="use the plasmids in this folder (labels.json: {id: {domain, trojan}}, one sub-folder per id) "
        "instead of training/reusing the cached pool",
    )

    @field_validator("domains", "allowed_ranks", "trusted_pubkeys", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        return _csv(v)

    @field_validator("security", "signatures", "peer_scoring", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        return on_off(v)

    @field_validator("domains")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(d.strip() for d in v if d.strip())
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"domains must be distinct and non-empty, got {','.join(v)}")
        return names

    @model_validator(mode="after")
    def _revoke_within_rounds(self) -> SwarmConfig:
        if self.revoke_at is not None and self.revoke_at > self.rounds:
            raise ValueError(f"--revoke_at {self.revoke_at} is after the last round (--rounds {self.rounds})")
        if self.trusted_pubkeys and self.signatures is False:
            raise ValueError("--trusted_pubkeys with --signatures off: give --signatures on (or no keys)")
        self._gate_flags_valid()
        return self

    def _gate_flags_valid(self) -> None:
        """The gate flags given must make a valid Policy on their own (a negative --tau_norm_z, a rank 0), so a bad
        one is refused before the pool trains, not when the policy is built after it."""
        given: dict[str, Any] = {}
        for name, f in SwarmConfig.model_fields.items():
            if isinstance(f.json_schema_extra, dict) and getattr(self, name) is not None:
                given[str(f.json_schema_extra["policy_field"])] = getattr(self, name)
        if not given:
            return
        if "allowed_targets" in given:
            given["allowed_targets"] = [given["allowed_targets"]]
        try:
            Policy(**given)
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"--{first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None

    def flags(self) -> dict[str, Any]:
        """Every flag as it appears in the report's ``meta.flags`` (None: not given)."""
        return self.model_dump(mode="json")


class SimConfig(SwarmConfig):
    """Swarm Sim v2 (``plora swarm sim``, ``python -m swarm_v2``): the shared flags plus overlay and protocol knobs."""

    graph: Literal["er", "ws", "ba"] = Field(default="er", description="overlay: er (Erdős–Rényi), ws, ba")
    ws_k: int = Field(default=4, ge=2, description="WS: ring degree (even)")
    ws_beta: float = Field(default=0.1, ge=0, le=1, description="WS: rewiring probability")
    ba_m: int = Field(default=2, ge=1, description="BA: edges per arriving agent")
    sources: int | None = Field(
        default=None,
        ge=1,
        description="seed K honest agents per domain (rumour spreading); default: honest agent i holds a clean "
        "plasmid of domain i mod D",
    )
    max_fetch_per_contact: int | None = Field(
        default=None, ge=1, description="plasmids each side may fetch per contact (default: no cap)"
    )
    gate_tpr: float | None = Field(
        default=None, ge=0, le=1, description="gate model: share of trojan plasmids the gate rejects (default: the "
        "real gate's verdicts on the real pool; see plora.swarm.gate_model)"
    )
    gate_fpr: float | None = Field(
        default=None, ge=0, le=1, description="gate model: share of clean plasmids the gate rejects (default 0)"
    )
    gate_plasmids: int | None = Field(
        default=None, ge=1, description="gate model: distinct plasmids per domain and label (default: as many as "
        "fit, 64 in all)"
    )
    compare_peer_scoring: bool = Field(
        default=False,
        description="also run the same seed with peer scoring flipped: both arms side by side in final.recall.arms",
    )

    @field_validator("compare_peer_scoring", mode="before")
    @classmethod
    def _on_off_compare(cls, v: Any) -> Any:
        return SwarmConfig._on_off(v)

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        if self.agents < 2:
            raise ValueError(f"--agents {self.agents}: a swarm needs at least 2 agents (one has nobody to contact)")
        if self.sources is not None and self.sources * len(self.domains) > self.agents:
            raise ValueError(
                f"--sources {self.sources} x {len(self.domains)} domains needs more than {self.agents} agents"
            )
        if self.graph == "ws" and (self.ws_k % 2 or self.ws_k >= self.agents):
            raise ValueError(f"--ws_k must be even and below the number of agents ({self.agents}), got {self.ws_k}")
        if self.gate_tpr is None and (self.gate_fpr is not None or self.gate_plasmids is not None):
            raise ValueError("--gate_fpr and --gate_plasmids belong to the gate model: give --gate_tpr too")
        if self.gate_tpr is not None and not self.security:
            raise ValueError("--gate_tpr models the gate's verdicts: it needs --security on")
        return self

    def flags(self) -> dict[str, Any]:
        """Every flag; the gate model's only when it is used (reports of real-gate runs keep their names)."""
        model = {"gate_tpr", "gate_fpr", "gate_plasmids"}
        return self.model_dump(mode="json", exclude=model if self.gate_tpr is None else None)


class NetConfig(SwarmConfig):
    """``plora swarm net``: the shared flags (Erdős–Rényi overlay) plus what real agent processes need."""

    max_per_contact: int = Field(default=8, ge=1, description="plasmids an agent fetches per contact at most")
    work_dir: str | None = Field(
        default=None, description="keep the agents' stores and logs here (default: a temporary folder, removed)"
    )
    step_timeout_s: float = Field(default=600.0, gt=0, description="seconds a round may take before an agent is dead")
    live_model: bool = Field(
        default=False,
        description="every agent hot-loads (merged) the accepted plasmids of its domain into a live base model and "
        "unloads revoked ones, checking the weights bit for bit (torch in every agent)",
    )
    progress: bool = Field(default=True, description="show a progress bar over rounds")
    ray: bool = Field(
        default=False, description="run the agents as Ray actors across the cluster's nodes (each a plora agent "
        "listening on its node's address) and drive the rounds through Ray"
    )
    ray_address: str | None = Field(
        default=None, description="with --ray: auto (the cluster started here with `ray start --head`) or "
        "HOST:PORT; default RAY_ADDRESS, else a private Ray on this machine"
    )

    def sim_config(self) -> SimConfig:
        """The Swarm Sim v2 config with the same shared flags: same overlay, roles and policy."""
        return make_config(**self.model_dump(include=set(SwarmConfig.model_fields)))

    def flags(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"progress", "work_dir", "report_dir", "step_timeout_s", "ray",
                                                     "ray_address"})

    @field_validator("live_model", mode="before")
    @classmethod
    def _on_off_live(cls, v: Any) -> Any:
        return SwarmConfig._on_off(v)


def make_config(cls: type[BaseModel] = SimConfig, /, **fields: Any) -> Any:
    """``cls`` (default SimConfig; any config model) from keyword flags; a bad value becomes a one-line PloraError
    naming the flag."""
    try:
        return cls(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
        flag = f"--{loc}: " if loc else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise PloraError(f"{flag}{msg}") from None
