"""Generation: a fill request turned into text by a loaded model.

  engine          the one entry point (Engine.load, fill, begin/step, warm); the one place
                  that chooses a job by layout and cache mode
  job             the job protocol (JobBase, JobEnv, StepRows) and WarmJob;
  diffusion_job,  the two kinds of fill: denoising on the diffusion layouts, left to right
  causal          on the causal one
  context_store   slots that each own a key/value cache and the tokens in it
  sampler         per-step token choice, commit rules and stop points
  params          FillParams, the one place the sampling defaults live
  fill_types      HoleSpec, StepInfo, FillStats, FillResult
  draft_adapter   a causal coder's mask-row drafter (shipped adapters live in adapters/)
  static_step     bucketed static-shape steps for CUDA graphs
  threads         torch's CPU threads per kind of work, chosen by measurement

Named generation rather than decoding: module names are unique across the packages and
`evaluation.decoding` (the decoding benchmark) holds that one.

Imports network, tokens and loading (Engine.load). Must not know sockets, scheduling or
the process (nothing from serving), nor LSP.
"""
