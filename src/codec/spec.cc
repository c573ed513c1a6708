#include "codec/spec.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "base/error.h"

namespace cc {
namespace {

constexpr const char* kGrammar =
    "grammar: name[:key=value,...][+name...]; names: none, nat, nat_det, dither_nat, dither_std, qsgd, "
    "terngrad, randk, topk; compositions: randk[:ratio=r]+<quantizer>, topk[:ratio=r|k=n]+nat";

struct Component {
  std::string name;
  std::map<std::string, std::string> keys;
};

uint32_t fnv1a(const std::string& text) {
  uint32_t hash = 2166136261u;
  for (unsigned char c : text) hash = (hash ^ c) * 16777619u;
  return hash;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t begin = 0;
  while (true) {
    const size_t end = text.find(separator, begin);
    parts.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

// Every failure names the spec, what was wrong, and the grammar.
cc_result_t specError(const std::string& spec, const std::string& problem) {
  return setError(CC_INVALID_ARGUMENT, "codec spec '%s': %s (%s)", spec.c_str(), problem.c_str(), kGrammar);
}

cc_result_t parseComponent(const std::string& spec, const std::string& text, Component* out) {
  const size_t colon = text.find(':');
  out->name = text.substr(0, colon);
  if (out->name.empty()) return specError(spec, "empty codec name");
  if (colon == std::string::npos) return CC_SUCCESS;
  const std::string list = text.substr(colon + 1);
  if (list.empty()) return specError(spec, "'" + out->name + ":' has no key=value after the colon");
  for (const std::string& pair : split(list, ',')) {
    const size_t equals = pair.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == pair.size()) {
      return specError(spec, "'" + pair + "' in " + out->name + " is not key=value");
    }
    const std::string key = pair.substr(0, equals);
    if (out->keys.count(key)) return specError(spec, "key '" + key + "' given twice in " + out->name);
    out->keys[key] = pair.substr(equals + 1);
  }
  return CC_SUCCESS;
}

// Takes the keys a component understands; leftovers are refused by name.
class KeyReader {
 public:
  KeyReader(const std::string& spec, Component& component) : spec_(spec), component_(component) {}

  bool has(const char* key) const { return component_.keys.count(key) != 0; }

  cc_result_t number(const char* key, double low, double high, double* value) {
    auto it = component_.keys.find(key);
    if (it == component_.keys.end()) return CC_SUCCESS;
    errno = 0;
    char* end = nullptr;
    const double parsed = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0' || errno != 0 || !std::isfinite(parsed) || parsed < low ||
        parsed > high) {
      char range[96];
      std::snprintf(range, sizeof(range), "[%g, %g]", low, high);
      return specError(spec_, std::string(key) + "=" + it->second + " in " + component_.name +
                                  " is not a number in " + range);
    }
    *value = parsed;
    component_.keys.erase(it);
    return CC_SUCCESS;
  }

  cc_result_t integer(const char* key, uint64_t low, uint64_t high, uint64_t* value) {
    auto it = component_.keys.find(key);
    if (it == component_.keys.end()) return CC_SUCCESS;
    errno = 0;
    char* end = nullptr;
    const unsigned long long parsed = std::strtoull(it->second.c_str(), &end, 10);
    if (end == it->second.c_str() || *end != '\0' || errno != 0 || it->second[0] == '-' || parsed < low ||
        parsed > high) {
      return specError(spec_, std::string(key) + "=" + it->second + " in " + component_.name +
                                  " is not an integer in [" + std::to_string(low) + ", " +
                                  std::to_string(high) + "]");
    }
    *value = parsed;
    component_.keys.erase(it);
    return CC_SUCCESS;
  }

  cc_result_t choice(const char* key, const std::vector<std::string>& valid, std::string* value) {
    auto it = component_.keys.find(key);
    if (it == component_.keys.end()) return CC_SUCCESS;
    for (const std::string& option : valid) {
      if (it->second == option) {
        *value = option;
        component_.keys.erase(it);
        return CC_SUCCESS;
      }
    }
    std::string list;
    for (const std::string& option : valid) list += (list.empty() ? "" : ", ") + option;
    return specError(spec_, std::string(key) + "=" + it->second + " in " + component_.name + " is not one of " + list);
  }

  cc_result_t finish(const char* validKeys) {
    if (component_.keys.empty()) return CC_SUCCESS;
    return specError(spec_, "unknown key '" + component_.keys.begin()->first + "' for " + component_.name +
                                " (valid keys: " + validKeys + ")");
  }

 private:
  const std::string& spec_;
  Component& component_;
};

// scope=bucket|tensor|model and bucket=B (B implies scope=bucket).
cc_result_t readScope(const std::string& spec, KeyReader& keys, Scope defaultScope, CodecSpec* out) {
  std::string scope = defaultScope == Scope::Bucket ? "bucket" : defaultScope == Scope::Tensor ? "tensor" : "model";
  const bool bucketGiven = keys.has("bucket");
  if (bucketGiven) scope = "bucket";
  CC_CHECK(keys.choice("scope", {"bucket", "tensor", "model"}, &scope));
  uint64_t bucket = out->bucketValues;
  CC_CHECK(keys.integer("bucket", 32, 1u << 24, &bucket));
  if (bucket % 32 != 0) {
    return specError(spec, "bucket=" + std::to_string(bucket) + " is not a multiple of 32");
  }
  if (bucketGiven && scope != "bucket") return specError(spec, "bucket= needs scope=bucket");
  out->scope = scope == "bucket" ? Scope::Bucket : scope == "tensor" ? Scope::Tensor : Scope::Model;
  out->bucketValues = static_cast<size_t>(bucket);
  return CC_SUCCESS;
}

cc_result_t readDither(const std::string& spec, Component& component, CodecSpec* out) {
  KeyReader keys(spec, component);
  DitherParams& dither = out->dither;
  const std::string& name = component.name;
  std::string norm = "f32";
  CC_CHECK(keys.choice("norm", {"f32", "nat"}, &norm));
  dither.natNorm = norm == "nat";
  if (name == "dither_nat" || name == "dither_std") {
    std::string p = "2";
    CC_CHECK(keys.choice("p", {"2", "inf"}, &p));
    dither.norm = p == "2" ? NormKind::L2 : NormKind::Max;
  }
  if (name == "dither_nat") {
    out->quantizer = Quantizer::DitherNat;
    uint64_t s = 8;
    CC_CHECK(keys.integer("s", 1, 126, &s));
    dither.levels = static_cast<uint32_t>(s);
  } else if (name == "dither_std") {
    out->quantizer = Quantizer::DitherStd;
    if (keys.has("s") && keys.has("u")) return specError(spec, "dither_std takes s= or u=, not both");
    uint64_t s = 3, u = 0;
    CC_CHECK(keys.integer("s", 1, 16, &s));
    CC_CHECK(keys.integer("u", 1, 65535, &u));
    dither.levels = u != 0 ? static_cast<uint32_t>(u) : (1u << (s - 1));
  } else if (name == "qsgd") {
    // QSGD's s counts the levels of [0, 1] (levels j/s): standard dithering, p = 2.
    out->quantizer = Quantizer::DitherStd;
    dither.norm = NormKind::L2;
    uint64_t s = 16;
    CC_CHECK(keys.integer("s", 1, 65535, &s));
    dither.levels = static_cast<uint32_t>(s);
  } else {  // terngrad: p = inf, one level, optional clipping
    out->quantizer = Quantizer::DitherStd;
    dither.norm = NormKind::Max;
    dither.levels = 1;
    double clip = 0.0;
    CC_CHECK(keys.number("clip", 0.0, 1e6, &clip));
    dither.clip = static_cast<float>(clip);
  }
  CC_CHECK(readScope(spec, keys, Scope::Bucket, out));
  const char* valid = name == "dither_nat"   ? "p, s, norm, scope, bucket"
                      : name == "dither_std" ? "p, s, u, norm, scope, bucket"
                      : name == "qsgd"       ? "s, norm, scope, bucket"
                                             : "clip, norm, scope, bucket";
  return keys.finish(valid);
}

bool isQuantizerName(const std::string& name) {
  return name == "none" || name == "nat" || name == "nat_det" || name == "dither_nat" || name == "dither_std" ||
         name == "qsgd" || name == "terngrad";
}

cc_result_t readQuantizer(const std::string& spec, Component& component, CodecSpec* out) {
  const std::string& name = component.name;
  if (name == "none" || name == "nat" || name == "nat_det") {
    out->quantizer = name == "none" ? Quantizer::Exact : name == "nat" ? Quantizer::Nat : Quantizer::NatDet;
    KeyReader keys(spec, component);
    return keys.finish("none");
  }
  return readDither(spec, component, out);
}

std::string formatNumber(double value) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.17g", value);
  return text;
}

std::string scopeText(const CodecSpec& spec) {
  switch (spec.scope) {
    case Scope::Bucket: return "bucket=" + std::to_string(spec.bucketValues);
    case Scope::Tensor: return "scope=tensor";
    case Scope::Model: return "scope=model";
  }
  return "";
}

std::string quantizerText(const CodecSpec& spec) {
  const DitherParams& d = spec.dither;
  switch (spec.quantizer) {
    case Quantizer::Exact: return "none";
    case Quantizer::Nat: return "nat";
    case Quantizer::NatDet: return "nat_det";
    case Quantizer::DitherNat:
    case Quantizer::DitherStd: {
      std::string text = spec.quantizer == Quantizer::DitherNat ? "dither_nat:" : "dither_std:";
      text += std::string("p=") + (d.norm == NormKind::L2 ? "2" : "inf");
      text += (spec.quantizer == Quantizer::DitherNat ? ",s=" : ",u=") + std::to_string(d.levels);
      text += std::string(",norm=") + (d.natNorm ? "nat" : "f32");
      if (d.clip > 0.0f) text += ",clip=" + formatNumber(d.clip);
      return text + "," + scopeText(spec);
    }
  }
  return "";
}

std::string canonicalText(const CodecSpec& spec) {
  switch (spec.selector) {
    case Selector::None: return quantizerText(spec);
    case Selector::RandK: {
      std::string text = "randk:ratio=" + formatNumber(spec.ratio);
      return spec.quantizer == Quantizer::Exact ? text : text + "+" + quantizerText(spec);
    }
    case Selector::TopK: {
      std::string text = spec.topK ? "topk:k=" + std::to_string(spec.topK) : "topk:ratio=" + formatNumber(spec.ratio);
      text += "," + scopeText(spec);
      return spec.quantizer == Quantizer::Exact ? text : text + "+nat";
    }
  }
  return "";
}

}  // namespace

cc_result_t parseCodecSpec(const std::string& text, CodecSpec* out) {
  if (text.empty()) return specError(text, "empty spec");
  std::vector<Component> components;
  for (const std::string& part : split(text, '+')) {
    if (part.empty()) return specError(text, "empty component around '+'");
    Component component;
    CC_CHECK(parseComponent(text, part, &component));
    components.push_back(component);
  }
  if (components.size() > 2) return specError(text, "at most two components (a selector and a quantizer)");
  CodecSpec spec;
  Component& first = components[0];
  std::string label = first.name;
  if (first.name == "randk" || first.name == "topk") {
    KeyReader keys(text, first);
    if (first.name == "randk") {
      spec.selector = Selector::RandK;
      spec.ratio = 0.1;
      CC_CHECK(keys.number("ratio", 0.0, 1.0, &spec.ratio));
      if (!(spec.ratio > 0.0)) return specError(text, "randk needs ratio > 0");
      CC_CHECK(keys.finish("ratio"));
    } else {
      spec.selector = Selector::TopK;
      spec.ratio = 0.01;
      if (keys.has("ratio") && keys.has("k")) return specError(text, "topk takes ratio= or k=, not both");
      CC_CHECK(keys.number("ratio", 0.0, 1.0, &spec.ratio));
      if (!(spec.ratio > 0.0)) return specError(text, "topk needs ratio > 0");
      uint64_t k = 0;
      CC_CHECK(keys.integer("k", 1, 0xffffffffull, &k));
      spec.topK = k;
      CC_CHECK(readScope(text, keys, Scope::Tensor, &spec));
      CC_CHECK(keys.finish("ratio, k, scope, bucket"));
    }
    spec.quantizer = Quantizer::Exact;
    if (components.size() == 2) {
      Component& second = components[1];
      label += "+" + second.name;
      if (!isQuantizerName(second.name)) {
        return specError(text, "'" + second.name + "' cannot follow " + first.name + " (it must be a quantizer)");
      }
      if (spec.selector == Selector::TopK && second.name != "nat") {
        return specError(text, "topk composes only with nat (the biased-then-unbiased composition of REFERENCE)");
      }
      if (second.name == "none") return specError(text, "'+none' adds nothing; write " + first.name + " alone");
      CC_CHECK(readQuantizer(text, second, &spec));
    }
  } else if (isQuantizerName(first.name)) {
    if (components.size() == 2) {
      return specError(text, "'" + first.name + "' cannot be followed by another component (only randk and topk can)");
    }
    CC_CHECK(readQuantizer(text, first, &spec));
  } else {
    return specError(text, "unknown codec '" + first.name + "'");
  }
  spec.label = label;
  spec.canonical = canonicalText(spec);
  spec.hash = fnv1a(spec.canonical);
  *out = spec;
  return CC_SUCCESS;
}

CodecSpec simpleCodecSpec(const char* name) {
  CodecSpec spec;
  if (parseCodecSpec(name, &spec) != CC_SUCCESS) parseCodecSpec("nat", &spec);
  return spec;
}

}  // namespace cc
