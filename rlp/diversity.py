"""G-Vendi: how diverse a set of documents is, measured through a proxy model's gradients, and
selection of diverse subsets (Prismatic Synthesis, Jung et al. 2025).

For each document i: the gradient g_i of its mean next-token loss under a proxy model (any model
the trainer loads), projected to d dimensions by a fixed-seed random map z_i = R g_i, then
unit-normalised (u_i = z_i / |z_i|). Two maps:
- "sketch" (the default): a count sketch, O(P) per document. Each parameter j of a leaf adds
  s_j g_j to one of the d coordinates; the signs s_j and the coordinates come from an integer
  hash of (seed, leaf, j), computed where they are used, so nothing random is stored or drawn
  from a key. E <R x, R y> = <x, y>, with the variance of a dense +-1/sqrt(d) projection
  (docs/diversity.md). Each document's gradient is projected as soon as it is computed, one at
  a time: memory holds one gradient whatever the batch.
- "dense": the paper's code: R a Rademacher matrix with entries +-1/sqrt(d), generated per
  parameter leaf and per chunk of `chunk` entries from the seed and never held whole; drawing
  d x P random signs per batch costs many times the gradient (kept for comparison).
With Sigma = (1/n) sum_i u_i u_i^T (d x d, trace 1, not centred) and its eigenvalues lambda_k:

    G-Vendi = exp(-sum_k lambda_k log lambda_k),   1 <= G-Vendi <= min(n, d).

It equals the Vendi score of the n x n cosine kernel of the projected gradients (the same non-zero
eigenvalues); the d x d form streams over any number of documents. On a mesh the per-document
gradients are computed with the batch sharded over every device of every process, and Sigma is
accumulated as one global sum.

Selection (`select`):
- "cluster": the paper's filter. Spherical k-means on the u_i (k = 10% of the pool, k-means++
  seeding, 20 Lloyd iterations, cosine assignment, centroid = normalised sum); documents of the smallest clusters
  are taken first (the paper keeps a candidate when its cluster is in the smaller half by size;
  to reach a size n we order by cluster size, ties in random order).
- "greedy": add, one at a time, the document that most increases the order-2 Vendi score
  1 / tr(Sigma^2) (an exact O(d) update per candidate: tr((S + u u^T)^2) = tr(S^2) + 2 u^T S u +
  1 for the unnormalised sum S). Order 2 stands in for order 1 (G-Vendi), whose greedy step needs an
  eigendecomposition per candidate; the reported score of the result is G-Vendi.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlp import objective


class DiversityError(ValueError):
  pass


# ---------------------------------------------------------------- the score
def g_vendi(z: np.ndarray) -> float:
  """G-Vendi of projected gradients z [n, d] (rows are normalised here)."""
  z = np.asarray(z, np.float64)
  if z.ndim != 2 or not len(z):
    raise DiversityError(f"need projected gradients [n, d] with n >= 1 (got shape {z.shape})")
  u = _unit(z)
  return vendi_from_second_moment(u.T @ u, len(u))


def vendi_from_second_moment(s_sum: np.ndarray, n: int) -> float:
  """G-Vendi from S = sum_i u_i u_i^T (unit u_i) over n documents."""
  lam = np.linalg.eigvalsh(np.asarray(s_sum, np.float64) / n)
  lam = lam[lam > 1e-12]
  lam = lam / lam.sum()  # trace 1 up to rounding
  return float(np.exp(-np.sum(lam * np.log(lam))))


def g_vendi_kernel(z: np.ndarray) -> float:
  """The same score from the n x n cosine kernel K / n (the Vendi score of the documents)."""
  u = _unit(np.asarray(z, np.float64))
  lam = np.linalg.eigvalsh(u @ u.T / len(u))
  lam = lam[lam > 1e-12]
  lam = lam / lam.sum()
  return float(np.exp(-np.sum(lam * np.log(lam))))


def _unit(z):
  norm = np.linalg.norm(z, axis=-1, keepdims=True)
  if np.any(norm == 0):
    raise DiversityError("a document's projected gradient is zero (an empty document, or a model "
                         "with no gradient there); drop it")
  return z / norm


# ---------------------------------------------------------------- the projection
def _mix(x):
  """A 32-bit integer hash (lowbias32): uniform-looking bits from consecutive inputs."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


@dataclasses.dataclass(frozen=True)
class SketchProjection:
  """z = R g with one +-1 per column of R (a count sketch). A leaf's P entries are laid out as
  rows of `dim`; entry (r, c) goes to coordinate (c + o_r) mod dim with sign s_rc, where the row
  offsets o_r and the signs are hashes of (seed, leaf, r[, c]). Two entries of one row never
  share a coordinate; entries of different rows share one with probability 1 / dim."""
  dim: int = 1024
  seed: int = 0
  batched = False  # projects one document's gradient at a time

  def _leaf_hash(self, li: int, rows: int):
    """(row offsets [rows], the signs' bits [rows, dim] in the leaf's layout) of leaf li."""
    d = self.dim
    key = _mix(jnp.uint32(self.seed) * jnp.uint32(0x9E3779B9) + jnp.uint32(li))
    r = jnp.arange(rows, dtype=jnp.uint32)
    offset = (_mix(r ^ _mix(key ^ jnp.uint32(0x51ED270B))) % jnp.uint32(d)).astype(jnp.int32)
    src = r[:, None] * jnp.uint32(d) + jnp.arange(d, dtype=jnp.uint32)[None]
    return offset, (_mix(src ^ key) & jnp.uint32(1)).astype(jnp.float32)

  def project(self, grads) -> jax.Array:
    """grads: one document's gradient pytree -> z [dim]. z[k] = sum_r y[r, (k - o_r) mod dim]
    (y: the signed entries as rows), computed as: the rows summed by offset (a scatter-add of
    whole rows into a [dim, dim] array), then each of those dim sums rotated by its offset; an
    entry-wise gather over all P entries costs about 4x more on a CPU (docs/diversity.md)."""
    d = self.dim
    z = jnp.zeros((d,), jnp.float32)
    rotate = (jnp.arange(d, dtype=jnp.int32)[None] - jnp.arange(d, dtype=jnp.int32)[:, None]) % d
    for li, leaf in enumerate(jax.tree_util.tree_leaves(grads)):
      flat = leaf.reshape(-1).astype(jnp.float32)
      rows = -(-flat.shape[0] // d)
      x = jnp.pad(flat, (0, rows * d - flat.shape[0])).reshape(rows, d)
      offset, bits = self._leaf_hash(li, rows)
      by_offset = jnp.zeros((d, d), jnp.float32).at[offset].add(x * (1.0 - 2.0 * bits))
      z = z + jnp.take_along_axis(by_offset, rotate, axis=1).sum(0)
    return z

  def matrix(self, shapes) -> np.ndarray:
    """R as a dense [P, dim] array for leaves of these shapes (tests; small models only)."""
    blocks = []
    for li, shape in enumerate(shapes):
      p = int(np.prod(shape))
      eye = {f"{i:03d}": jnp.zeros(s) for i, s in enumerate(shapes)}
      name = f"{li:03d}"
      cols = []
      for j in range(p):
        g = dict(eye)
        g[name] = jnp.zeros(p).at[j].set(1.0).reshape(shape)
        cols.append(np.asarray(self.project(g)))
      blocks.append(np.stack(cols))
    return np.concatenate(blocks)


@dataclasses.dataclass(frozen=True)
class Projection:
  """The dense map: z = R g / sqrt(dim) with R in {-1, +1}^{dim x P}, generated per leaf and per
  chunk from seed (the paper's code)."""
  dim: int = 1024
  seed: int = 0
  chunk: int = 1 << 14
  batched = True  # projects a batch of documents' gradients at once (one R for all of them)

  def apply(self, grads) -> jax.Array:
    """grads: a pytree whose leaves are [B, ...] per-document gradients -> z [B, dim]."""
    leaves = jax.tree_util.tree_leaves(grads)
    b = leaves[0].shape[0]
    z = jnp.zeros((b, self.dim), jnp.float32)
    base = jax.random.key(self.seed)
    for li, leaf in enumerate(leaves):
      flat = leaf.reshape(b, -1).astype(jnp.float32)
      p = flat.shape[1]
      n_chunks = -(-p // self.chunk)
      flat = jnp.pad(flat, ((0, 0), (0, n_chunks * self.chunk - p)))
      xs = flat.reshape(b, n_chunks, self.chunk).transpose(1, 0, 2)  # [C, B, chunk]
      leaf_key = jax.random.fold_in(base, li)

      def body(acc, x_i, leaf_key=leaf_key):
        x, i = x_i
        return acc + x @ rademacher(jax.random.fold_in(leaf_key, i), self.chunk, self.dim), None

      z, _ = jax.lax.scan(body, z, (xs, jnp.arange(n_chunks)))
    return z / math.sqrt(self.dim)


def rademacher(key, rows: int, cols: int) -> jax.Array:
  """A [rows, cols] matrix of independent +-1 entries, 8 per random byte (generating the signs,
  not the matmul, is what a dense projection of a whole model costs on a CPU)."""
  bits = jax.random.bits(key, (rows, -(-cols // 8)), jnp.uint8)
  signs = (bits[..., None] >> jnp.arange(8, dtype=jnp.uint8)) & 1
  return signs.reshape(rows, -1)[:, :cols].astype(jnp.float32) * 2.0 - 1.0


# ---------------------------------------------------------------- gradients of documents
def _doc_loss(params, graphdef, tokens, length):
  """Mean next-token NLL of one document (the whole document is the completion)."""
  model = nnx.merge(graphdef, params)
  nll = -objective.token_logp(model(tokens[None])[0, :-1], tokens[1:])  # no [S, V] log-probs
  mask = (jnp.arange(tokens.shape[0] - 1) < length - 1).astype(jnp.float32)
  return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


PROJECTIONS = {"sketch": SketchProjection, "dense": Projection}


def make_projector(graphdef, projection, mesh=None):
  """jit(params, tokens [B, S], lengths [B]) -> (z [B, d], second-moment sum [d, d]).
  With a mesh the batch is sharded over all its devices (every process's). A batched projection
  (dense) takes the batch's gradients at once (memory: B gradients); the sketch computes and
  projects one document's gradient at a time (memory: one gradient)."""

  def fn(params, tokens, lengths):
    if projection.batched:
      grads = jax.vmap(jax.grad(_doc_loss), in_axes=(None, None, 0, 0))(params, graphdef, tokens,
                                                                         lengths)
      z = projection.apply(grads)
    else:
      z = jax.lax.map(lambda x: projection.project(jax.grad(_doc_loss)(params, graphdef, *x)),
                      (tokens, lengths))
    u = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-30)
    ok = (lengths >= 2)[:, None].astype(jnp.float32)  # padding rows of a short last batch
    u = u * ok
    return z, u.T @ u

  if mesh is None:
    return jax.jit(fn)
  from jax.sharding import NamedSharding, PartitionSpec as P
  batch = NamedSharding(mesh, P(mesh.axis_names))
  rep = NamedSharding(mesh, P())
  return jax.jit(fn, in_shardings=(rep, batch, batch), out_shardings=(batch, rep))


@dataclasses.dataclass
class Measured:
  g_vendi: float
  n: int
  proj_dim: int
  seconds: float
  z: np.ndarray  # [n, d] this process's documents' projected gradients (for selection)


def measure(model, docs: Sequence[np.ndarray], seq_len: int = 256, proj_dim: int = 1024,
            batch_size: int = 4, seed: int = 0, mesh=None, progress: bool = False,
            projection: str = "sketch", state_file: str | None = None) -> Measured:
  """G-Vendi of documents (int32 token arrays; truncated to seq_len) under `model`.
  Multi-process: pass each process its own documents and a mesh over all devices; Sigma is the
  global sum, G-Vendi the same on every process. state_file: the partial result is saved there
  after every batch, and a run that finds one made with the same settings continues from it (an
  interrupted scoring run resumes where it stopped)."""
  if not len(docs):
    raise DiversityError("no documents to measure")
  if projection not in PROJECTIONS:
    raise DiversityError(f"projection must be one of {sorted(PROJECTIONS)} (got {projection!r})")
  graphdef, params = nnx.split(model)
  proj = PROJECTIONS[projection](dim=proj_dim, seed=seed)
  fn = make_projector(graphdef, proj, mesh)
  n_dev = 1 if mesh is None else mesh.size
  bs = max(batch_size, n_dev) // n_dev * n_dev
  t0 = time.perf_counter()
  s_sum = np.zeros((proj_dim, proj_dim), np.float64)
  zs = []
  settings = {"projection": projection, "proj_dim": proj_dim, "seed": seed, "seq_len": seq_len,
              "docs": len(docs), "batch": bs, "first_doc": [int(x) for x in docs[0][:16]]}
  start = 0
  if state_file and os.path.exists(state_file):
    s_sum, zs, start = _load_partial(state_file, settings)
  it = range(start, len(docs), bs)
  if progress:
    from tqdm import tqdm
    it = tqdm(it, desc="gradients", unit="batch", total=-(-len(docs) // bs),
              initial=start // bs)
  n_local = start
  for i in it:
    chunk = docs[i:i + bs]
    tokens = np.zeros((bs, seq_len), np.int32)
    lengths = np.zeros((bs,), np.int32)
    for j, d in enumerate(chunk):
      d = np.asarray(d[:seq_len], np.int32)
      tokens[j, :len(d)] = d
      lengths[j] = len(d)
    if np.any(lengths[:len(chunk)] < 2):
      raise DiversityError("a document has fewer than 2 tokens: it has no next-token loss")
    if mesh is not None and jax.process_count() > 1:
      from jax.sharding import NamedSharding, PartitionSpec as P
      sh = NamedSharding(mesh, P(mesh.axis_names))
      tokens = jax.make_array_from_process_local_data(sh, tokens)
      lengths = jax.make_array_from_process_local_data(sh, lengths)
    z, s = fn(params, tokens, lengths)
    s_sum += np.asarray(jax.device_get(s), np.float64)
    z = z.addressable_data(0) if hasattr(z, "addressable_data") and not z.is_fully_addressable \
        else z
    zs.append(np.asarray(z)[:len(chunk)])
    n_local += len(chunk)
    if state_file and (mesh is None or jax.process_index() == 0):
      _save_partial(state_file, settings, s_sum, zs, i + bs)
  n = n_local * (jax.process_count() if mesh is not None else 1)
  score = vendi_from_second_moment(s_sum, n)
  return Measured(g_vendi=score, n=n, proj_dim=proj_dim, seconds=time.perf_counter() - t0,
                  z=np.concatenate(zs))


def _save_partial(path, settings, s_sum, zs, next_doc):
  tmp = path + ".tmp.npz"
  np.savez(tmp, settings=json.dumps(settings), s_sum=s_sum, z=np.concatenate(zs),
           next_doc=next_doc)
  os.replace(tmp, path)


def _load_partial(path, settings):
  try:
    with np.load(path) as f:
      saved = json.loads(str(f["settings"]))
      s_sum, z, next_doc = f["s_sum"], f["z"], int(f["next_doc"])
  except (OSError, ValueError, KeyError) as e:
    raise DiversityError(f"{path} is not a partial G-Vendi result ({e}); remove it or pass "
                         "another file") from None
  if saved != settings:
    diff = sorted(k for k in settings if saved.get(k) != settings[k])
    raise DiversityError(f"{path} holds a partial result of another scoring run (it differs in "
                         f"{', '.join(diff)}); rerun with that run's settings to continue it, or "
                         "pass another file")
  return s_sum, [z], next_doc


# ---------------------------------------------------------------- selection
def spherical_kmeans(u: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
  """Cluster ids of unit rows u [n, d]: cosine assignment, centroid = normalised sum."""
  rng = np.random.default_rng(seed)
  k = max(1, min(k, len(u)))
  # k-means++ seeding on the cosine distance, so that small groups get a centroid of their own
  cent = [u[rng.integers(len(u))]]
  for _ in range(k - 1):
    dist = np.clip(1.0 - np.max(u @ np.asarray(cent).T, axis=1), 0.0, None) ** 2
    p = dist / dist.sum() if dist.sum() > 0 else np.full(len(u), 1.0 / len(u))
    cent.append(u[rng.choice(len(u), p=p)])
  cent = np.array(cent)
  for _ in range(iters):
    assign = np.argmax(u @ cent.T, axis=1)
    for c in range(k):
      members = u[assign == c]
      if len(members):
        s = members.sum(0)
        cent[c] = s / max(np.linalg.norm(s), 1e-30)
  return np.argmax(u @ cent.T, axis=1)


def select(z: np.ndarray, n: int, by: str = "cluster", seed: int = 0) -> np.ndarray:
  """Indices of n diverse documents of the pool z [N, d] (see the module docstring)."""
  u = _unit(np.asarray(z, np.float64))
  if not 1 <= n <= len(u):
    raise DiversityError(f"--n={n} must be in [1, pool size {len(u)}]")
  rng = np.random.default_rng(seed)
  if by == "cluster":
    assign = spherical_kmeans(u, max(1, len(u) // 10), seed=seed)
    size = np.bincount(assign)[assign]
    order = np.lexsort((rng.random(len(u)), size))  # smallest clusters first, ties at random
    return np.sort(order[:n])
  if by == "greedy":
    chosen = [int(rng.integers(len(u)))]
    s = np.outer(u[chosen[0]], u[chosen[0]])
    free = np.ones(len(u), bool)
    free[chosen[0]] = False
    while len(chosen) < n:
      # tr((S + u u^T)^2) = tr(S^2) + 2 u^T S u + 1: the smallest u^T S u maximises 1/tr(Sigma^2)
      cost = np.einsum("nd,de,ne->n", u, s, u)
      cost[~free] = np.inf
      i = int(np.argmin(cost))
      chosen.append(i)
      free[i] = False
      s += np.outer(u[i], u[i])
    return np.sort(np.asarray(chosen))
  raise DiversityError(f"--by={by!r}: use cluster or greedy")
