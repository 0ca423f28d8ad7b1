"""Training stage: SFT with LoRA, DPO/IPO and KTO."""
