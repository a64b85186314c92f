// The layers of a trained model on the three engines (see sim/model.h).
#include "permdnn/sim/model.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "comparison.h"
#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/formats/registry.h"
#include "permdnn/kernels/permdiag.h"

namespace permdnn::sim {

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

void CheckLayer(const ModelLayer& l) {
  const int set = l.permdiag.has_value() + l.circulant.has_value() + l.sparse.has_value() + l.ternary.has_value();
  PERMDNN_CHECK(set == 1, "sim --model, layer {}: expected exactly one matrix, got {}", l.name, set);
  PERMDNN_CHECK(!l.inputs.empty(), "sim --model, layer {}: no input samples", l.name);
  for (std::size_t s = 0; s < l.inputs.size(); ++s)
    PERMDNN_CHECK(static_cast<int64_t>(l.inputs[s].size()) == l.cols(),
                  "sim --model, layer {}: sample {} has {} activations, the layer has {} inputs", l.name, s,
                  l.inputs[s].size(), l.cols());
  PERMDNN_CHECK(l.positions >= 1, "sim --model, layer {}: positions = {} must be >= 1", l.name, l.positions);
  PERMDNN_CHECK(l.scale_max.empty() || l.scale_max.size() == l.inputs.size(),
                "sim --model, layer {}: {} scale_max entries for {} inputs", l.name, l.scale_max.size(),
                l.inputs.size());
}

// The mean of one engine's records over the samples of a layer: counts and
// energies are averaged, cycles rounded to the nearest integer, and the
// rates re-derived (frames/s = 1 / mean latency). Conv layers: the records
// are per output position, and one inference is `positions` of them, so
// counts and energies are the mean times `positions`.
LayerResult MeanRecord(const std::vector<LayerResult>& rs, int64_t positions, int samples) {
  LayerResult r = rs.front();
  const double k = static_cast<double>(rs.size()) / static_cast<double>(positions);
  double cycles = 0, useful = 0, issued = 0, imbalance = 0, act = 0;
  EnergyBreakdown e;
  std::map<std::string, double> counters;
  for (const auto& x : rs) {
    cycles += static_cast<double>(x.cycles) / k;
    useful += static_cast<double>(x.useful_macs) / k;
    issued += static_cast<double>(x.issued_macs) / k;
    imbalance += x.load_imbalance / static_cast<double>(rs.size());
    act += x.act_density / static_cast<double>(rs.size());
    e += x.energy.Scaled(1.0 / k);
    for (const auto& [name, v] : x.counters) counters[name] += static_cast<double>(v) / k;
  }
  r.cycles = std::llround(cycles);
  r.useful_macs = std::llround(useful);
  r.issued_macs = std::llround(issued);
  r.load_imbalance = imbalance;
  r.act_density = act;
  r.energy = e;
  for (auto& [name, v] : r.counters) v = std::llround(counters[name]);
  r.output.clear();
  r.samples = samples;
  r.Finish();
  // Finish() counts m·n dense operations per inference; a conv inference
  // has them at every output position.
  r.dense_equiv_gops *= static_cast<double>(positions);
  return r;
}

}  // namespace

const char* ModelLayer::format() const {
  return permdiag ? "permdiag" : circulant ? "circulant" : ternary ? "ternary" : "sparse";
}
int64_t ModelLayer::rows() const {
  return permdiag    ? permdiag->rows()
         : circulant ? circulant->rows()
         : sparse    ? sparse->rows()
         : ternary   ? ternary->rows()
                     : 0;
}
int64_t ModelLayer::cols() const {
  return permdiag    ? permdiag->cols()
         : circulant ? circulant->cols()
         : sparse    ? sparse->cols()
         : ternary   ? ternary->cols()
                     : 0;
}

int EqualBytesBlockSize(int64_t m, int64_t n, int64_t bytes) {
  PERMDNN_CHECK(m >= 1 && n >= 1, "equal-bytes block size: shape {}x{} must be at least 1x1", m, n);
  int best = 1;
  int64_t best_err = INT64_MAX;
  for (int64_t p = 1; p <= std::min(m, n); ++p) {
    const int64_t b =
        formats::StoredSize(formats::Kind::kPermDiag, {m, n, {}, static_cast<int>(p)}, 0, 0, false, {16, true}).bytes;
    const int64_t err = b > bytes ? b - bytes : bytes - b;
    if (err < best_err) {
      best_err = err;
      best = static_cast<int>(p);
    }
  }
  return best;
}

LayerWorkload BuildModelWorkload(const ModelLayer& layer, bool build_csc,
                                 std::map<std::string, std::string>* sources) {
  CheckLayer(layer);
  const int64_t m = layer.rows(), n = layer.cols();
  LayerWorkload w;
  w.spec = FcLayerSpec{layer.name, n, m, 1.0, 1.0};
  std::vector<float> dense;
  if (!layer.permdiag)
    dense = layer.circulant ? layer.circulant->ToDense()
            : layer.ternary ? layer.ternary->ToDense()
                            : layer.sparse->ToDense();

  // PermDNN: the matrix itself, or the projection of the dense
  // reconstruction at the layer's p (circulant) / the p matched to the
  // density (sparse, as for the synthetic EIE layers).
  PermDiagMatrix pd;
  if (layer.permdiag) {
    pd = *layer.permdiag;
    w.spec.weight_density = static_cast<double>(pd.nnz()) / static_cast<double>(m * n);
    (*sources)["permdnn"] = fmt::format("its permdiag matrix (p={})", pd.p());
  } else if (layer.ternary) {
    const TernaryMatrix& t = *layer.ternary;
    w.spec.weight_density = static_cast<double>(t.nonzeros()) / static_cast<double>(m * n);
    const int p = EqualBytesBlockSize(m, n, t.bytes());
    PermDiagProjection proj = PermDiagMatrix::FromDense(dense, m, n, p);
    pd = std::move(proj.matrix);
    (*sources)["permdnn"] = fmt::format(
        "projection of its ternary matrix onto permdiag p={} at equal weight bytes ({} B at 16 bits vs the ternary "
        "layer's {} B; kept {:.1f}% of the energy)",
        p, formats::StoredSize(formats::Kind::kPermDiag, {m, n, {}, p}, 0, 0, false, {16, true}).bytes, t.bytes(),
        100.0 * proj.kept_energy);
    (*sources)["adder"] = fmt::format("its ternary matrix (group_len {}, {} of {} groups kept, {} B)", t.group_len(),
                                      t.kept_groups(), t.rows() * t.groups_per_row(), t.bytes());
    (*sources)["mac16"] = fmt::format("its dense reconstruction at 16 bits, every group ({} B)", m * n * 2);
    w.ternary = t;
  } else {
    const double density = layer.sparse ? layer.sparse->density() : 1.0;
    w.spec.weight_density = layer.sparse ? density : 1.0 / layer.circulant->p();
    int p = layer.circulant ? layer.circulant->p() : MatchBlockSize(std::max(density, 1e-9));
    p = static_cast<int>(std::min<int64_t>(p, std::min(m, n)));
    PermDiagProjection proj = PermDiagMatrix::FromDense(dense, m, n, p);
    pd = std::move(proj.matrix);
    (*sources)["permdnn"] = fmt::format("projection of its {} matrix onto permdiag p={} (kept {:.1f}% of the energy)",
                                        layer.format(), p, 100.0 * proj.kept_energy);
  }
  w.p = pd.p();
  PermDiagMatrixI16 q = PermDiagMatrixI16::Quantize(pd);
  w.row_blocks = q.row_blocks();
  w.col_blocks = q.col_blocks();
  w.offsets.assign(q.offsets().begin(), q.offsets().end());
  // Output in the input's format: y = acc · 2^-(fw + fx) brought to 2^-fx.
  w.output_shift = q.frac_bits();
  w.weights = std::move(q);

  // EIE: the CSR matrix itself, else the unstructured CSC of the dense
  // reconstruction.
  if (build_csc) {
    if (layer.sparse) {
      w.csc = CscMatrix::FromCsr(*layer.sparse);
      (*sources)["eie"] = fmt::format("its sparse matrix (density {:.4f})", layer.sparse->density());
    } else {
      if (dense.empty()) dense = layer.permdiag->ToDense();
      w.csc = CscMatrix::FromDense(dense, m, n);
      (*sources)["eie"] = fmt::format("its {} matrix stored as CSC (density {:.4f}, EIE indices + padding)",
                                      layer.format(), w.csc->density());
    }
  }
  (*sources)["circnn"] = layer.circulant ? fmt::format("its circulant matrix (p={})", w.p)
                                         : fmt::format("block-circulant at the PermDNN p={} (timing needs p only)", w.p);
  return w;
}

void SetModelInput(LayerWorkload& w, std::span<const float> x, double max_abs) {
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == w.n(), "sim --model, layer {}: {} activations for {} inputs",
                w.spec.name, x.size(), w.n());
  w.x_frac_bits = ChooseFracBits<int16_t>(max_abs >= 0 ? max_abs : MaxAbs(x));
  w.x.resize(x.size());
  QuantizeSpan<int16_t>(x, w.x_frac_bits, w.x);
  w.nonzero_cols.clear();
  for (std::size_t j = 0; j < w.x.size(); ++j)
    if (w.x[j] != 0) w.nonzero_cols.push_back(static_cast<int32_t>(j));
  w.spec.act_density = w.act_density();
}

ComparisonResult RunModelComparison(const std::vector<ModelLayer>& layers, const ModelComparisonOptions& o) {
  PERMDNN_CHECK(!layers.empty(), "sim --model: the model has no compressed layers to simulate");
  for (const auto& l : layers) CheckLayer(l);
  ComparisonResult out;
  out.compare_to_published = false;
  out.samples = layers.front().sample_count();
  out.tech_path = o.tech_path.empty() ? TechTable::DefaultPath() : o.tech_path;
  const TechTable tech = TechTable::Load(out.tech_path);
  nlohmann::json config = o.config;
  if (config.is_object()) config.erase("workload");  // the model fixes matrices and activations
  std::vector<std::unique_ptr<Engine>> engines = MakeEngines(o.archs, config, tech, &out.resolved_config);
  bool needs_csc = false;
  for (const auto& e : engines) needs_csc = needs_csc || e->needs_csc();

  const int64_t L = static_cast<int64_t>(layers.size());
  std::vector<std::vector<LayerResult>> per_layer(static_cast<std::size_t>(L));
  std::vector<double> build_s(static_cast<std::size_t>(L)), sim_s(static_cast<std::size_t>(L));
  std::vector<int> checked(static_cast<std::size_t>(L), 0), mismatched(static_cast<std::size_t>(L), 0);
  std::atomic<int64_t> next{0};
  const int threads = static_cast<int>(std::min<int64_t>(HardwareThreads(), L));
  const auto wall0 = Clock::now();
  ParallelFor(threads, threads, [&](int64_t, int64_t, int) {
    for (int64_t i = next++; i < L; i = next++) {
      const ModelLayer& layer = layers[i];
      const auto t0 = Clock::now();
      std::map<std::string, std::string> sources;
      LayerWorkload w = BuildModelWorkload(layer, needs_csc, &sources);
      build_s[i] = Seconds(t0, Clock::now());
      std::vector<std::vector<LayerResult>> runs(engines.size());
      for (std::size_t s = 0; s < layer.inputs.size(); ++s) {
        const auto t1 = Clock::now();
        SetModelInput(w, layer.inputs[s], layer.scale_max.empty() ? -1.0 : layer.scale_max[s]);
        for (std::size_t e = 0; e < engines.size(); ++e)
          if (engines[e]->Supports(w)) runs[e].push_back(engines[e]->Run(w, nullptr));
        const auto t2 = Clock::now();
        sim_s[i] += Seconds(t1, t2);
        for (const auto& r : runs)
          if (!r.empty() && r.back().arch == "permdnn" && !r.back().output.empty() && o.check_functional) {
            std::vector<int16_t> y(static_cast<std::size_t>(w.m()));
            kernels::PermDiagMatVecI16(*w.weights, w.x, {}, w.output_shift, y);
            checked[i] = 1;
            if (y != r.back().output) mismatched[i] = 1;
          }
        for (auto& r : runs)
          if (!r.empty()) r.back().output.clear();
        build_s[i] += Seconds(t2, Clock::now());
      }
      for (std::size_t e = 0; e < engines.size(); ++e) {
        if (runs[e].empty()) continue;  // the engine does not run this layer's format
        LayerResult mean = MeanRecord(runs[e], layer.positions, layer.sample_count());
        mean.source = sources[engines[e]->name()];
        if (!layer.note.empty()) mean.source += "; " + layer.note;
        per_layer[i].push_back(std::move(mean));
      }
    }
  });
  out.wall_seconds = Seconds(wall0, Clock::now());
  out.threads = threads;
  std::vector<std::string> names;
  for (int64_t i = 0; i < L; ++i) {
    names.push_back(layers[i].name);
    for (auto& r : per_layer[i]) out.records.push_back(std::move(r));
    out.build_seconds += build_s[i];
    out.simulate_seconds += sim_s[i];
    out.functional_checks += checked[i];
    out.functional_mismatches += mismatched[i];
  }
  FinishComparison(out, names, engines, o.archs, tech);
  out.notes.push_back(fmt::format("model layers: {} sample(s) per layer; published ranges are for EIE's nine layers "
                                  "and not compared here",
                                  out.samples));
  for (const auto& l : layers) {
    if (l.recurrent_node.empty()) continue;
    auto it = std::find_if(out.recurrent.begin(), out.recurrent.end(),
                           [&](const RecurrentGroup& g) { return g.node == l.recurrent_node; });
    if (it == out.recurrent.end()) {
      out.recurrent.push_back({l.recurrent_node, l.recurrent_cell, l.positions, {}});
      it = out.recurrent.end() - 1;
    }
    PERMDNN_CHECK(it->steps == l.positions, "sim --model, layer {}: {} time steps, its node {} has {}", l.name,
                  l.positions, l.recurrent_node, it->steps);
    it->layers.push_back(l.name);
  }
  for (const auto& l : layers)
    if (l.positions > 1 && !l.recurrent_node.empty())
      out.notes.push_back(fmt::format("{}: one {}x{} matrix x vector product per time step; per inference: {}", l.name,
                                      l.rows(), l.cols(), l.note.empty() ? "the sum over them" : l.note));
    else if (l.positions > 1)
      out.notes.push_back(fmt::format("{}: one {}x{} im2col matrix x vector product per output position; per "
                                      "inference: {}",
                                      l.name, l.rows(), l.cols(), l.note.empty() ? "the sum over them" : l.note));
  return out;
}

}  // namespace permdnn::sim
