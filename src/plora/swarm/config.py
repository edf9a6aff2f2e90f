"""Swarm Sim v2 configuration: one validated object, every field documented (the flags of ``python -m swarm_v2``).

    >>> from plora.swarm.config import SimConfig
    >>> cfg = SimConfig(agents=6, rounds=5, graph_p=0.25, security=True, trojan_rate=0.3)
    >>> cfg.domains
    ('arithmetic', 'legal', 'medical', 'science')
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plora.errors import PloraError

DEFAULT_DOMAINS = ("arithmetic", "legal", "medical", "science")


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: int = Field(default=6, ge=1, le=100_000_000, description="number of agents")
    rounds: int = Field(
        default=50, ge=0, description="maximum rounds; the run stops earlier once nothing can change any more"
    )
    seed: int = Field(default=0, description="seeds graph, trojan draw, sources and every contact")
    graph: Literal["er", "ws", "ba"] = Field(default="er", description="overlay: Erdős–Rényi, Watts–Strogatz, BA")
    graph_p: float = Field(default=0.25, ge=0, le=1, description="ER edge probability (mean degree p (N-1))")
    ws_k: int = Field(default=4, ge=2, description="WS: ring degree (even)")
    ws_beta: float = Field(default=0.1, ge=0, le=1, description="WS: rewiring probability")
    ba_m: int = Field(default=2, ge=1, description="BA: edges per arriving agent")
    domains: tuple[str, ...] = Field(default=DEFAULT_DOMAINS, min_length=1, description="plasmid domains")
    sources: int | None = Field(
        default=None,
        ge=1,
        description="seed K honest agents per domain (classic rumour spreading); default: honest agent i "
        "holds a clean plasmid of domain i mod D",
    )
    max_fetch_per_contact: int | None = Field(
        default=None, ge=1, description="plasmids each side may fetch per contact (default: no cap)"
    )
    trojan_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of agents (drawn by seed) that start with a trojan plasmid"
    )
    security: bool = Field(default=True, description="screen every received plasmid with the gate")
    allowed_targets: Literal["attention", "all"] = Field(default="attention", description="gate: LoRA targets")
    allowed_ranks: tuple[int, ...] = Field(default=(4, 8, 16), min_length=1, description="gate: LoRA ranks")
    signatures: bool = Field(default=False, description="gate: require a signature by a trusted key")
    trusted_pubkeys: tuple[str, ...] = Field(default=(), description="gate: public key files trusted")
    policy_file: str | None = Field(default=None, description="gate policy JSON; flags override its fields")
    tau_trigger: float | None = Field(default=None, description="gate: trigger-probe threshold override")
    tau_norm_z: float | None = Field(default=None, description="gate: weight-norm z-score threshold override")
    tau_clean_delta: float | None = Field(default=None, description="gate: clean-probe delta threshold override")
    report_dir: str = Field(default="results", description="folder for the report JSON and coverage PNG")
    pool_dir: str | None = Field(
        default=None,
        description="use the plasmids in this folder (labels.json: {id: {domain, trojan}}, one sub-folder per id, the "
        "networked swarm's format) instead of training/reusing the cached pool",
    )

    @field_validator("domains")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(d.strip() for d in v if d.strip())
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"domains must be distinct and non-empty, got {','.join(v)}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        if self.sources is not None and self.sources * len(self.domains) > self.agents:
            raise ValueError(
                f"--sources {self.sources} x {len(self.domains)} domains needs more than {self.agents} agents"
            )
        if self.graph == "ws" and self.ws_k % 2:
            raise ValueError(f"--ws_k must be even, got {self.ws_k}")
        return self

    def flags(self) -> dict[str, Any]:
        """Every flag as it appears in the report's ``meta.flags``."""
        return self.model_dump(mode="json")


def make_config(**fields: Any) -> SimConfig:
    """SimConfig from keyword flags; a bad value becomes a one-line PloraError naming the flag."""
    try:
        return SimConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        flag = f"--{loc}: " if loc else ""
        raise PloraError(f"{flag}{first['msg']}") from None
