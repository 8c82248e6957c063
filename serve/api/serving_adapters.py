"""/v1/models with the LoRA adapters, and vLLM's run-time adapter routes:
POST /v1/load_lora_adapter {"lora_name", "lora_path"} and POST /v1/unload_lora_adapter
{"lora_name"}. Loading and unloading run between two decode rounds (serve/adapters.py).
No Ray and no HTTP here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from serve.adapters import AdapterNotFound, AdapterRefused, Adapters
from serve.api.errors import APIError
from serve.api.responses import ModelCard
from serve.scheduler import Scheduler


class LoadLoraAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str
    lora_path: str


class UnloadLoraAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str


class OpenAIServingAdapters:
    def __init__(
        self, adapters: Adapters, scheduler: Scheduler, base_id: str, lineage_id: str | None = None
    ) -> None:
        self.adapters, self.scheduler, self.base_id = adapters, scheduler, base_id
        self.lineage_id = lineage_id  # the export's pipeline lineage (serve.lineage_id)

    def models(self) -> dict:
        cards = [ModelCard(id=self.base_id, root=self.base_id, lineage_id=self.lineage_id)]
        cards += [
            ModelCard(id=name, root=name, parent=self.base_id) for name in self.adapters.ids()
        ]
        return {"object": "list", "data": [card.model_dump() for card in cards]}

    async def load(self, req: LoadLoraAdapterRequest) -> dict:
        await self._between_rounds(self.adapters.load_at_run_time, req.lora_name, req.lora_path)
        return {"status": "ok", "lora_name": req.lora_name}

    async def unload(self, req: UnloadLoraAdapterRequest) -> dict:
        await self._between_rounds(self.adapters.unload_at_run_time, req.lora_name)
        return {"status": "ok", "lora_name": req.lora_name}

    async def _between_rounds(self, fn, *args) -> None:
        try:
            await self.scheduler.run_between_rounds(fn, *args)
        except AdapterNotFound as e:
            raise APIError(404, str(e), "lora_name", "model_not_found") from None
        except AdapterRefused as e:
            raise APIError(400, str(e), e.param) from None
