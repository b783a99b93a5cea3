from dataclasses import dataclass


@dataclass
class SchedulerConfig:
    scheduler_cls: str | None = None
