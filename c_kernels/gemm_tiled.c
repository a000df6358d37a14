/* dpl_gemm_tiled: a GEMM cut into L1 output tiles, double-buffered over the cluster DMA and split
   over the cluster's cores, see dpl_kernels.h.

   Schedule (the tiler predicts the DMA traffic from it, keep the two in step):
   - tiles in order batch, row block mi, column block ni (fastest); edge tiles are smaller;
   - the A block of a tile is its rows x k (one 1-D transfer), the B block k x cols (2-D, L2 row
     stride n) or, when B is transposed, cols x k (1-D); packed in L1 (A: ld k, B: ld cols or k,
     Y tile: ld cols);
   - an operand block is fetched only when its key differs from the previous tile's: A (batch A
     offset, mi), B (batch B offset, ni); a new block goes into the slot of the operand's 2-slot
     ring that the current block does not occupy;
   - per tile t: start tile t+1's new fetches, wait for tile t's blocks, wait for the out-transfer
     that last read Y slot t % 2 (tile t-2), compute into it, start its out-transfer (2-D, L2 row
     stride n); at the end wait for everything.
   A fetch for tile t+1 never lands in a slot tile t reads: a new block always goes into the other
   slot, whose previous block belonged to an earlier tile that has been computed (and whose
   transfer has been waited, so its job is free).
   An operand whose two slots are the same offset is single-buffered: its new block is fetched
   after tile t has been computed, so the transfer is not hidden but L1 holds one block.
   On the NPU engine B is the packed weight matrix in the NPU's weight memory: never fetched, read in
   place; n0 is a multiple of the channel group, so column n0's group starts n0 * k bytes in. */
#include "dpl_kernels.h"

typedef struct gt_tile {
  int32_t batch, mi, ni;
  int32_t m0, n0, rows, cols;
  int32_t a_off, b_off; /* element offsets of this batch's A and B */
} gt_tile_t;

/* What every core of a tile's fork needs. */
typedef struct gt_work {
  const dpl_gemm_plan_t *plan;
  const uint8_t *a_blk; /* rows x k, ld k */
  const uint8_t *b_blk; /* k x cols, ld cols; or cols x k, ld k */
  uint8_t *y_tile;      /* rows x cols, ld cols */
  int32_t rows, cols, n0, cores;
  uint32_t out_elem;
  const float *bias;
  const dpl_requant_t *rq;
} gt_work_t;

static void gt_tile_at(const dpl_gemm_plan_t *p, int32_t t, int32_t row_blocks, int32_t col_blocks,
                       gt_tile_t *tile) {
  const int32_t rest = t / col_blocks;
  tile->ni = t % col_blocks;
  tile->mi = rest % row_blocks;
  tile->batch = rest / row_blocks;
  tile->m0 = tile->mi * p->tile_m;
  tile->n0 = tile->ni * p->tile_n;
  tile->rows = p->m - tile->m0 < p->tile_m ? p->m - tile->m0 : p->tile_m;
  tile->cols = p->n - tile->n0 < p->tile_n ? p->n - tile->n0 : p->tile_n;
  tile->a_off = p->a_batch_offsets ? p->a_batch_offsets[tile->batch] : tile->batch * p->m * p->k;
  tile->b_off = p->b_batch_offsets ? p->b_batch_offsets[tile->batch] : tile->batch * p->k * p->n;
}

static void gt_fetch_a(const dpl_gemm_plan_t *p, const gt_tile_t *tile, const uint8_t *a, uint32_t elem,
                       uint8_t *dst, dpl_dma_job_t *job) {
  const uint8_t *src = a + ((uint32_t)tile->a_off + (uint32_t)tile->m0 * (uint32_t)p->k) * elem;
  dpl_dma_start_1d(job, dst, src, (uint32_t)tile->rows * (uint32_t)p->k * elem, DPL_DMA_TO_L1);
}

/* Bytes of a lane-packed B block of `cols` columns (whole panels, all of k). */
static uint32_t gt_lanes_bytes(const dpl_gemm_plan_t *p, int32_t cols) {
  const uint32_t panels = (uint32_t)(cols + DPL_GEMM_S8_LANES_PANEL - 1) / DPL_GEMM_S8_LANES_PANEL;
  return panels * (uint32_t)p->k * 4u * (uint32_t)sizeof(uint32_t);
}

static void gt_fetch_b(const dpl_gemm_plan_t *p, const gt_tile_t *tile, const uint8_t *b, uint32_t elem,
                       uint8_t *dst, dpl_dma_job_t *job) {
  if (p->b_lanes_chunk) {
    /* tile->n0 is a whole number of panels: the block is the panels' words, one transfer */
    dpl_dma_start_1d(job, dst, b + gt_lanes_bytes(p, tile->n0), gt_lanes_bytes(p, tile->cols), DPL_DMA_TO_L1);
  } else if (p->b_transposed) {
    const uint8_t *src = b + ((uint32_t)tile->b_off + (uint32_t)tile->n0 * (uint32_t)p->k) * elem;
    dpl_dma_start_1d(job, dst, src, (uint32_t)tile->cols * (uint32_t)p->k * elem, DPL_DMA_TO_L1);
  } else {
    const uint8_t *src = b + ((uint32_t)tile->b_off + (uint32_t)tile->n0) * elem;
    dpl_dma_start_2d(job, dst, src, (uint32_t)tile->cols * elem, (uint32_t)p->k,
                     (uint32_t)tile->cols * elem, (uint32_t)p->n * elem, DPL_DMA_TO_L1);
  }
}

/* A tile on the NPU: one job over the A block in L1 and the column block's weight groups in place. */
static void gt_npu_tile(const gt_work_t *w, const int8_t *weights) {
  const dpl_requant_t *rq = w->rq;
  dpl_npu_job_t job;
  job.input = (const int8_t *)w->a_blk;
  job.input_stride = (uint32_t)w->plan->k;
  job.weights = weights;
  job.output = (int8_t *)w->y_tile;
  job.output_stride = (uint32_t)w->cols;
  job.rows = (uint32_t)w->rows;
  job.in_channels = (uint32_t)w->plan->k;
  job.out_channels = (uint32_t)w->cols;
  job.bias = rq->bias ? rq->bias + w->n0 : 0;
  job.mul = rq->mul + w->n0;
  job.shift = rq->shift + w->n0;
  job.out_zp = rq->out_zp;
  job.clip_lo = rq->lo;
  job.clip_hi = rq->hi;
  dpl_npu_submit(&job);
  dpl_npu_wait();
}

/* One core's share of a tile: a contiguous range of rows, or of columns when the tile has fewer
   rows than cores but at least as many columns, handed out from the last core down. A column share is a
   whole number of gemm_s8's register blocks (8 columns, or 4 when the tile is narrower than 8 per core; a
   lane-packed B's panels): a single-row share left with odd columns would run them one at a time, at twice
   the instructions per MAC. */
static void gt_core(void *arg) {
  const gt_work_t *w = (const gt_work_t *)arg;
  const dpl_gemm_plan_t *p = w->plan;
  /* shares go from the last core down: core 0, which also runs the driver's DMA and the fork, gets the
     last share, the smallest or none when the shares do not come out even */
  const int32_t core = w->cores - 1 - dpl_core_id();
  const int32_t k = p->k;
  int32_t r0 = 0, r1 = w->rows, c0 = 0, c1 = w->cols;
  uint8_t *y_sub;
  int32_t ldb;
  if (w->rows < w->cores && w->cols >= w->cores) {
    const int32_t even = (w->cols + w->cores - 1) / w->cores;
    const int32_t block = p->b_lanes_chunk ? DPL_GEMM_S8_LANES_PANEL : even > 4 ? 8 : 4;
    const int32_t share = (even + block - 1) / block * block;
    c0 = core * share;
    c1 = c0 + share < w->cols ? c0 + share : w->cols;
  } else {
    const int32_t share = (w->rows + w->cores - 1) / w->cores;
    r0 = core * share;
    r1 = r0 + share < w->rows ? r0 + share : w->rows;
  }
  if (r0 >= r1 || c0 >= c1) return;
  ldb = p->b_transposed ? k : w->cols;
  y_sub = w->y_tile + ((uint32_t)r0 * (uint32_t)w->cols + (uint32_t)c0) * w->out_elem;
  if (p->dtype == DPL_F32) {
    const float *a_blk = (const float *)(const void *)w->a_blk;
    const float *b_blk = (const float *)(const void *)w->b_blk;
    dpl_gemm_f32(a_blk + r0 * k, k, b_blk + (p->b_transposed ? c0 * k : c0), ldb, p->b_transposed,
                 w->bias ? w->bias + w->n0 + c0 : w->bias, (float *)(void *)y_sub, w->cols,
                 r1 - r0, c1 - c0, k);
  } else {
    const int8_t *a_blk = (const int8_t *)w->a_blk;
    const int8_t *b_blk = (const int8_t *)w->b_blk;
    dpl_requant_t rq_sub;
    const dpl_requant_t *rq = w->rq;
    if (rq) {
      /* the tile's columns start at global column n0 + c0 */
      const int32_t col = w->n0 + c0;
      rq_sub = *rq;
      if (rq_sub.bias) rq_sub.bias += col;
      if (rq_sub.mul) rq_sub.mul += col;
      if (rq_sub.add) rq_sub.add += col;
      if (rq_sub.shift) rq_sub.shift += col;
      rq = &rq_sub;
    }
    if (p->b_lanes_chunk) {
      const uint32_t *panels = (const uint32_t *)(const void *)(w->b_blk + gt_lanes_bytes(p, c0));
      dpl_gemm_s8_lanes(a_blk + r0 * k, k, panels, p->b_lanes_chunk, y_sub, w->cols, r1 - r0, c1 - c0, k,
                        p->b_zp, rq);
    } else {
      dpl_gemm_s8(a_blk + r0 * k, k, b_blk + (p->b_transposed ? c0 * k : c0), ldb, p->b_transposed,
                  y_sub, w->cols, r1 - r0, c1 - c0, k, p->a_zp, p->b_zp, rq);
    }
  }
}

static void gt_job_clear(dpl_dma_job_t *job) {
  job->dst = 0;
  job->src = 0;
  job->row_bytes = job->rows = job->dst_stride = job->src_stride = 0;
  job->direction = 0;
  job->pending = 0;
}

void dpl_gemm_tiled(const dpl_gemm_plan_t *plan, uint8_t *l1, const void *a, const void *b, void *y,
                    const float *bias, const dpl_requant_t *rq) {
  const dpl_gemm_plan_t *p = plan;
  const uint8_t *a8 = (const uint8_t *)a;
  const uint8_t *b8 = (const uint8_t *)b;
  uint8_t *y8 = (uint8_t *)y;
  const uint32_t elem = p->dtype == DPL_F32 ? 4u : 1u;
  const uint32_t out_elem = (p->dtype == DPL_F32 || rq == 0 || rq->mode == DPL_REQUANT_NONE) ? 4u : 1u;
  dpl_dma_job_t job_a[2], job_b[2], job_y[2];
  int32_t row_blocks, col_blocks, tiles, t, i;
  const int32_t on_npu = p->engine == DPL_ENGINE_NPU;
  int32_t a_slot = 0, b_slot = 0; /* ring slot holding the current tile's A / B block */
  const int32_t a_single = p->l1_a[0] == p->l1_a[1], b_single = p->l1_b[0] == p->l1_b[1];
  gt_tile_t cur, next;
  gt_work_t work;

  if (p->m <= 0 || p->n <= 0 || p->k < 0 || p->batch <= 0 || p->tile_m <= 0 || p->tile_n <= 0) return;
  row_blocks = (p->m + p->tile_m - 1) / p->tile_m;
  col_blocks = (p->n + p->tile_n - 1) / p->tile_n;
  tiles = p->batch * row_blocks * col_blocks;
  for (i = 0; i < 2; ++i) {
    gt_job_clear(&job_a[i]);
    gt_job_clear(&job_b[i]);
    gt_job_clear(&job_y[i]);
  }

  work.plan = p;
  work.cores = p->cores > 1 ? p->cores : 1;
  work.out_elem = out_elem;
  work.bias = p->dtype == DPL_F32 ? bias : 0;
  work.rq = p->dtype == DPL_F32 ? 0 : rq;

  gt_tile_at(p, 0, row_blocks, col_blocks, &cur);
  next = cur;
  gt_fetch_a(p, &cur, a8, elem, l1 + p->l1_a[0], &job_a[0]);
  if (!on_npu) gt_fetch_b(p, &cur, b8, elem, l1 + p->l1_b[0], &job_b[0]);

  for (t = 0; t < tiles; ++t) {
    const int32_t ys = t & 1;
    int32_t a_next = a_slot, b_next = b_slot, a_new = 0, b_new = 0;
    uint8_t *y_l2;
    /* prefetch tile t+1's new blocks into the free slots of double-buffered operands */
    if (t + 1 < tiles) {
      gt_tile_at(p, t + 1, row_blocks, col_blocks, &next);
      a_new = next.a_off != cur.a_off || next.mi != cur.mi;
      b_new = !on_npu && (next.b_off != cur.b_off || next.ni != cur.ni);
      if (a_new && !a_single) {
        a_next = 1 - a_slot;
        gt_fetch_a(p, &next, a8, elem, l1 + p->l1_a[a_next], &job_a[a_next]);
      }
      if (b_new && !b_single) {
        b_next = 1 - b_slot;
        gt_fetch_b(p, &next, b8, elem, l1 + p->l1_b[b_next], &job_b[b_next]);
      }
    }
    /* tile t's operands are in; Y slot ys is free once tile t-2's result has gone out */
    dpl_dma_wait(&job_a[a_slot]);
    dpl_dma_wait(&job_b[b_slot]);
    dpl_dma_wait(&job_y[ys]);

    work.a_blk = l1 + p->l1_a[a_slot];
    work.b_blk = l1 + p->l1_b[b_slot];
    work.y_tile = l1 + p->l1_y[ys];
    work.rows = cur.rows;
    work.cols = cur.cols;
    work.n0 = cur.n0;
    if (on_npu) {
      /* the column block's weight groups: whole groups of the packed matrix from column n0 */
      gt_npu_tile(&work, (const int8_t *)b8 + (uint32_t)cur.n0 * (uint32_t)p->k);
    } else {
      dpl_cluster_fork(work.cores, gt_core, &work);
    }

    y_l2 = y8 + ((uint32_t)cur.batch * (uint32_t)p->m * (uint32_t)p->n + (uint32_t)cur.m0 * (uint32_t)p->n +
                 (uint32_t)cur.n0) * out_elem;
    dpl_dma_start_2d(&job_y[ys], y_l2, work.y_tile, (uint32_t)cur.cols * out_elem, (uint32_t)cur.rows,
                     (uint32_t)p->n * out_elem, (uint32_t)cur.cols * out_elem, DPL_DMA_TO_L2);
    /* single-buffered operands: the only slot is free now that tile t has been computed */
    if (a_new && a_single) gt_fetch_a(p, &next, a8, elem, l1 + p->l1_a[0], &job_a[0]);
    if (b_new && b_single) gt_fetch_b(p, &next, b8, elem, l1 + p->l1_b[0], &job_b[0]);

    cur = next;
    a_slot = a_next;
    b_slot = b_next;
  }
  for (i = 0; i < 2; ++i) {
    dpl_dma_wait(&job_a[i]);
    dpl_dma_wait(&job_b[i]);
    dpl_dma_wait(&job_y[i]);
  }
}
