from glob import glob

from judgeflow import smk
from judgeflow.report import benchmark_table, build_report

smk.setup(snakemake)
p = snakemake.params
benchmark_table([f for f in glob(f"{p.bench_dir}/*/*.tsv") if "/report/" not in f], snakemake.output.timings)
build_report(list(p.sections) + [("Timings per job (benchmark: files)", [snakemake.output.timings])],
             snakemake.output.html, title=f"judgeflow run '{p.run}'", root=p.results)
