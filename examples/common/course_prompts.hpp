// examples/common/course_prompts.hpp: the course's ten prompts, continued by 04_russian_novels during and after
// training and analysed by `tinylm eval generations` by default.
#pragma once

#include <array>
#include <string_view>

namespace recipes {

inline constexpr std::array<std::string_view, 10> course_prompts = {"Все мысли, которые имеют огромные последствия",
                                                                    "Сила войска зависит от его духа",
                                                                    "Мысль о том, что он принес страдания",
                                                                    "Человек сознает себя свободным",
                                                                    "Что бы ни случилось, я всегда буду",
                                                                    "Любовь мешает смерти",
                                                                    "Нет, жизнь не кончена",
                                                                    "Всякая мысль, даже самая простая",
                                                                    "Война не любезность, а самое гадкое дело",
                                                                    "Чтобы жить честно"};

} // namespace recipes
