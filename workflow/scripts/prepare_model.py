from judgeflow import smk
from judgeflow.models.convert import gguf_to_safetensors

smk.setup(snakemake)
spec = snakemake.params.spec
gguf_to_safetensors(spec["gguf_package"], spec["gguf_file"], snakemake.output[0],
                    key=f"prepare.models.{snakemake.wildcards.model}")
