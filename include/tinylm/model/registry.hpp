// tinylm/model/registry.hpp: presets by name. A program that offers a choice of configurations on its command
// line turns the name into a type once, here, instead of an if-chain:
//
//   return tl::presets::visit<tl::presets::tiny, tl::presets::russian_novels_cpu>(name, [&]<class P>() {
//       tl::decoder<P> model(seed);   // instantiated for the listed presets only
//       ...
//   });
//
// The callable is invoked as f.template operator()<P>() or, if it takes an argument, as f(std::type_identity<P>{});
// every instantiation must return the same type, which visit returns. An unknown name throws tl::error listing the
// valid ones. Without a list, visit covers every preset of model/presets.hpp (each instantiation costs compile
// time: list what the program offers). A program's own names, or its own configurations, are aliases:
//
//   using tl::presets::named;
//   tl::presets::visit<named<"cpu", tl::presets::russian_novels_cpu>, named<"my", my_config>>(flag, f);
//
// A list used more than once can be a std::tuple: `using known = std::tuple<tiny, named<"my", my_config>>;` then
// visit<known>(name, f), find<known>(c), names<known>().
//
// find(c) names a preset whose model_config equals c in every field (or after a projection); names() lists them.
// See docs/config.md.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/model/presets.hpp>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace tl::presets {

// A string literal as a template argument: named<"cpu", russian_novels_cpu>.
template <std::size_t N>
struct fixed_string {
    char chars[N]{};
    constexpr fixed_string(const char (&s)[N]) { std::copy_n(s, N, chars); } // NOLINT: implicit by design
    constexpr std::string_view view() const { return {chars, N - 1}; }
};

// A configuration under a name: `name` is the name, `type` the configuration type.
template <fixed_string Name, ModelConfig C>
struct named {
    using type = C;
    static constexpr std::string_view name = Name.view();
};

// Every preset of model/presets.hpp under its own name.
using all = std::tuple<named<"tiny", tiny>, named<"russian_novels_150m", russian_novels_150m>,
                       named<"russian_novels_cpu", russian_novels_cpu>, named<"tatar_dense", tatar_dense>,
                       named<"tatar_moe", tatar_moe>, named<"tatar_sliding", tatar_sliding>,
                       named<"qwen2_5_0_5b", qwen2_5_0_5b>, named<"qwen3_0_6b", qwen3_0_6b>,
                       named<"tinyllama_1_1b", tinyllama_1_1b>>;

namespace detail {
template <class T>
struct is_named : std::false_type {};
template <fixed_string Name, class C>
struct is_named<named<Name, C>> : std::true_type {};

template <class P, class Tuple>
struct find_registered;
template <class P>
struct find_registered<P, std::tuple<>> {
    using type = void;
};
template <class P, class E, class... Es>
struct find_registered<P, std::tuple<E, Es...>> {
    using type = std::conditional_t<std::is_same_v<typename E::type, P>, E,
                                    typename find_registered<P, std::tuple<Es...>>::type>;
};

// The entry of a listed type: a named<> as it is, a preset under its registered name.
template <class P>
struct entry_of {
    using type = typename find_registered<P, all>::type;
    static_assert(!std::is_void_v<type>, "tl::presets::visit: this configuration has no registered name; list it as "
                                         "tl::presets::named<\"its-name\", Config>");
};
template <fixed_string Name, class C>
struct entry_of<named<Name, C>> {
    using type = named<Name, C>;
};

template <class... Ps>
struct entries {
    using type = std::tuple<typename entry_of<Ps>::type...>;
};
template <>
struct entries<> {
    using type = all;
};
template <class... Ts> // a list kept in a std::tuple: visit<known>(name, f) with using known = std::tuple<...>
struct entries<std::tuple<Ts...>> {
    using type = std::tuple<typename entry_of<Ts>::type...>;
};
template <class... Ps>
using entries_t = typename entries<Ps...>::type;

template <class P, class F>
decltype(auto) invoke_with(F&& f) {
    if constexpr (std::is_invocable_v<F, std::type_identity<P>>)
        return std::forward<F>(f)(std::type_identity<P>{});
    else
        return std::forward<F>(f).template operator()<P>();
}

template <class Tuple>
struct names_of;
template <class... Es>
struct names_of<std::tuple<Es...>> {
    static std::vector<std::string_view> get() { return {Es::name...}; }
};

// One function per entry, chosen by name at run time.
template <class Tuple, class F, std::size_t... I>
decltype(auto) visit_entries(std::string_view name, F&& f, std::index_sequence<I...>) {
    using R = decltype(invoke_with<typename std::tuple_element_t<0, Tuple>::type>(std::forward<F>(f)));
    static_assert(
        (std::is_same_v<R, decltype(invoke_with<typename std::tuple_element_t<I, Tuple>::type>(std::forward<F>(f)))> &&
         ...),
        "tl::presets::visit: the callable must return the same type for every configuration");
    using call = R (*)(F &&);
    static constexpr std::string_view keys[] = {std::tuple_element_t<I, Tuple>::name...};
    static constexpr call calls[] = {
        [](F&& g) -> R { return invoke_with<typename std::tuple_element_t<I, Tuple>::type>(std::forward<F>(g)); }...};
    for (std::size_t i = 0; i < sizeof...(I); ++i)
        if (keys[i] == name) return calls[i](std::forward<F>(f));
    std::string valid;
    for (const std::string_view k : keys)
        valid += (valid.empty() ? "" : ", ") + std::string(k);
    fail("presets: unknown configuration '" + std::string(name) + "'; valid: " + valid);
}
template <int V, int... Rest, class F>
decltype(auto) visit_int_from(std::string_view what, int value, F&& f, std::string valid) {
    if (value == V) return std::forward<F>(f).template operator()<V>();
    if (!valid.empty()) valid += ", ";
    valid += std::to_string(V);
    if constexpr (sizeof...(Rest) == 0) {
        std::string message(what);
        message += ' ';
        message += std::to_string(value);
        message += " is not compiled into this program; valid: ";
        message += valid;
        fail(message);
    } else {
        return visit_int_from<Rest...>(what, value, std::forward<F>(f), std::move(valid));
    }
}

} // namespace detail

// The names visit<Ps...> accepts, in order (all presets without a list).
template <class... Ps>
std::vector<std::string_view> names() {
    return detail::names_of<detail::entries_t<Ps...>>::get();
}

// Calls f with the configuration type called `name` among Ps (all presets without a list); throws tl::error
// listing the valid names when there is none.
template <class... Ps, class F>
decltype(auto) visit(std::string_view name, F&& f) {
    using entries = detail::entries_t<Ps...>;
    return detail::visit_entries<entries>(name, std::forward<F>(f),
                                          std::make_index_sequence<std::tuple_size_v<entries>>{});
}

// The name of the first of Ps (all presets without a list) whose configuration equals c in every field; none: {}.
// With a projection, proj(P::value) == c instead: e.g. tl::hf_visible (io/hf_config.hpp) to compare only what a
// config.json carries.
template <class... Ps, class Proj = std::identity>
std::optional<std::string_view> find(const model_config& c, Proj proj = {}) {
    return [&]<class... Es>(std::type_identity<std::tuple<Es...>>) -> std::optional<std::string_view> {
        std::optional<std::string_view> found;
        const auto matches = [&]<class E>() {
            if (!(model_config(std::invoke(proj, E::type::value)) == c)) return false;
            found = E::name;
            return true;
        };
        static_cast<void>((matches.template operator()<Es>() || ...)); // the first match
        return found;
    }(std::type_identity<detail::entries_t<Ps...>>{});
}

// The registered name of a preset type: name_of<tl::presets::tiny>() == "tiny".
template <class P>
constexpr std::string_view name_of() {
    return detail::entry_of<P>::type::name;
}

// A compile-time integer chosen at run time from the values a program compiles, such as a LoRA rank (the adapter's
// shapes are part of the model type): visit_int<4, 8, 16>("--lora-rank", rank, f) calls f.template operator()<R>()
// for the R equal to `value`, each listed value instantiating f once; another value throws tl::error naming `what`
// and the valid values.
template <int... Vs, class F>
decltype(auto) visit_int(std::string_view what, int value, F&& f) {
    static_assert(sizeof...(Vs) > 0, "tl::presets::visit_int: list at least one value");
    return detail::visit_int_from<Vs...>(what, value, std::forward<F>(f), std::string{});
}

} // namespace tl::presets
