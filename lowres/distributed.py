"""Data-parallel runs under ``torchrun`` or ``accelerate launch``.

Transformers' Trainer already does the data-parallel work (DDP, sharded evaluation with
gathered predictions); what it cannot know is lowres's run folder. Hydra derives the
folder from ``${now:...}`` in every process separately, so two ranks started a second
apart would write two folders. Rank 0 therefore picks the time and broadcasts it, every
rank gets the same ``hydra.run.dir``, and only rank 0 writes anything into it.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

from omegaconf import OmegaConf

from lowres.errors import LowresError
from lowres.overrides import key_of

# How long rank 0 serves the run time before it gives up on ranks that never came.
READ_TIMEOUT_S = 600.0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def shared_time() -> datetime:
    """Rank 0's clock, on every rank, passed through the launcher's key-value store.

    No process group is created for this: libraries change behaviour once one exists
    (transformers' ``save_pretrained`` then writes nothing on ranks other than 0), and the
    Trainer sets up its own group later. Under torchrun (and ``accelerate launch``) the
    store is the launcher agent's; otherwise rank 0 serves one at MASTER_ADDR:MASTER_PORT
    until every rank has read the value, before the Trainer's group binds that port.
    """
    now = datetime.now()
    if world_size() == 1:
        return now
    from torch.distributed import TCPStore  # the CLI imports this module; torch only here

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = TCPStore(
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        int(os.environ.get("MASTER_PORT", "29500")),
        is_master=not agent and is_main_process(),
        wait_for_workers=False,
        timeout=timedelta(minutes=10),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    key, readers = f"lowres/run_time/{attempt}", f"lowres/run_time_read/{attempt}"
    if is_main_process():
        store.set(key, now.isoformat())
        if not agent:  # keep serving until the other ranks have the value
            deadline = time.monotonic() + READ_TIMEOUT_S
            while store.add(readers, 0) < world_size() - 1:
                if time.monotonic() > deadline:
                    raise LowresError(
                        f"Rank 0 waited {READ_TIMEOUT_S:.0f} s for the other "
                        f"{world_size() - 1} ranks to read the run time from "
                        f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:"
                        f"{os.environ.get('MASTER_PORT', '29500')}, and only "
                        f"{store.add(readers, 0)} did. Check that every rank was started "
                        "with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE (torchrun sets "
                        "them), and that no rank failed at start-up."
                    )
                time.sleep(0.05)
        return now
    stamp = datetime.fromisoformat(store.get(key).decode())
    store.add(readers, 1)
    return stamp


_NOW = re.compile(r"\$\{now:([^}]*)\}")


def rank_overrides(primary_config: Path, overrides: list[str]) -> list[str]:
    """Hydra overrides that make all ranks of one run agree on its folder.

    Empty for a single process. The folder templates come from the verb's YAML file with
    ``${now:...}`` replaced by rank 0's time; folders given on the command line are kept.
    Ranks other than 0 also write no ``.hydra/`` files and no log file.
    """
    if world_size() == 1:
        return []
    stamp = shared_time()
    hydra_section = OmegaConf.to_container(OmegaConf.load(primary_config), resolve=False).get(
        "hydra", {}
    )
    extra = []
    for key in ("run.dir", "sweep.dir"):
        section, leaf = key.split(".")
        template = hydra_section.get(section, {}).get(leaf)
        given = any(key_of(o) == f"hydra.{key}" for o in overrides)
        if template and not given:
            extra.append(f"hydra.{key}={_NOW.sub(lambda m: stamp.strftime(m.group(1)), template)}")
    if not is_main_process():
        extra.append("hydra.output_subdir=null")
        if not any(key_of(o) == "hydra/job_logging" for o in overrides):
            extra.append("hydra/job_logging=none")
    return extra
