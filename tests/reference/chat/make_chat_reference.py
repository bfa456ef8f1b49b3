#!/usr/bin/env python3
"""Renders chat templates with transformers' apply_chat_template (Jinja2) for tests/chat/test_chat_template.cpp.

Writes chat_cases.json: the template sources, the special tokens transformers passed to each, the conversations,
and one expected rendering (or expected error) per case. tinylm must reproduce every rendering byte for byte.

Templates:
  qwen3         read from <data>/tokenizers/qwen3/tokenizer_config.json (Qwen3, Apache-2.0)
  chatml        Qwen2.5-Instruct's template (Qwen/Qwen2.5-0.5B-Instruct tokenizer_config.json, Apache-2.0);
                tinylm's built-in tl::chat_templates::chatml
  zephyr        TinyLlama-1.1B-Chat-v1.0's template (TinyLlama/TinyLlama-1.1B-Chat-v1.0, Apache-2.0);
                tinylm's built-in tl::chat_templates::zephyr
  llama-2-chat  meta-llama/Llama-2-7b-chat-hf's template (Llama 2 Community Licence). The llama2 tokenizer in
                <data>/tokenizers/llama2 is the base model's and has no chat_template, so the chat model's is
                written here.
The qwen3 and chatml templates render with the qwen3 tokenizer (eos <|im_end|>, pad <|endoftext|>, no bos), the
zephyr and llama-2-chat templates with the llama2 tokenizer (bos <s>, eos </s>, unk <unk>).

Usage: make_chat_reference.py [--data DIR] [--out DIR]   (needs tests/reference/requirements.txt)
"""
import argparse
import json
import os
import sys

import jinja2
import transformers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

CHATML = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
    "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Погода в городе на несколько дней вперёд",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "Город, например «Казань»"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "translate",
            "description": "Translate text between Russian, Tatar and English",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "target": {"type": "string"}},
                "required": ["text", "target"],
            },
        },
    },
]

CONVERSATIONS = {
    "ru_system_multi_turn": [
        {"role": "system", "content": "Ты — вежливый помощник. Отвечай кратко."},
        {"role": "user", "content": "Как зовут автора «Войны и мира»?"},
        {"role": "assistant", "content": "Лев Николаевич Толстой."},
        {"role": "user", "content": "А в каком году он родился?"},
    ],
    "tt_no_system": [
        {"role": "user", "content": "Исәнмесез! Казан турында сөйләгез әле."},
        {"role": "assistant", "content": "Казан — Татарстан башкаласы, Идел буенда урнашкан борынгы шәһәр."},
        {"role": "user", "content": "Рәхмәт! Ә Кремль турында?"},
    ],
    "en_single_user": [
        {"role": "user", "content": "Hello there."},
    ],
    "ru_ends_with_assistant": [
        {"role": "system", "content": "Отвечай по-русски."},
        {"role": "user", "content": "Расскажи анекдот про программиста."},
        {"role": "assistant", "content": "— Почему программисты путают Хэллоуин с Рождеством?\n— Потому что 31 OCT = 25 DEC."},
    ],
    "whitespace_and_escapes": [
        {"role": "system", "content": "  \n Системное сообщение с пробелами \t\n"},
        {"role": "user", "content": "  Кавычки \"двойные\" и 'одинарные', обратный слэш \\ и эмодзи 🙂\n\n"},
        {"role": "assistant", "content": "\nОтвет с {{ фигурными }} скобками и {% тегами %}.  "},
        {"role": "user", "content": "Ещё раз: <|im_start|> внутри текста."},
    ],
    "empty_system": [
        {"role": "system", "content": ""},
        {"role": "user", "content": "Пустой системный промпт."},
    ],
    "reasoning_content": [
        {"role": "system", "content": "Думай по шагам."},
        {"role": "user", "content": "Сколько будет 17 × 3?"},
        {"role": "assistant", "content": "51", "reasoning_content": "17 × 3 = 17 × 2 + 17 = 34 + 17 = 51."},
        {"role": "user", "content": "А 51 / 3?"},
        {"role": "assistant", "content": "<think>\nДелим 51 на 3: получается 17.\n</think>\n\n17"},
    ],
    "reasoning_last_turn": [
        {"role": "user", "content": "Татарча «рәхмәт» нәрсә аңлата?"},
        {"role": "assistant", "content": "«Рәхмәт» — «спасибо».", "reasoning_content": "\nЭто татарское слово благодарности.\n"},
    ],
    "reasoning_under_other_names": [
        {"role": "user", "content": "Первый вопрос."},
        {"role": "assistant", "content": "Первый ответ.", "thinking": "Размышление под ключом thinking."},
        {"role": "user", "content": "Второй вопрос."},
        {"role": "assistant", "content": "Второй ответ.", "reasoning": "Размышление под ключом reasoning."},
    ],
    "tool_calls": [
        {"role": "system", "content": "Ты — помощник с доступом к инструментам."},
        {"role": "user", "content": "Какая погода будет в Казани и Уфе на 3 дня?"},
        {
            "role": "assistant",
            "content": "Сейчас узнаю.",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Казань", "days": 3}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Уфа", "days": 3, "units": "celsius"}}},
            ],
        },
        {"role": "tool", "content": "{\"city\": \"Казань\", \"forecast\": [\"+5\", \"+7\", \"+3\"]}"},
        {"role": "tool", "content": "{\"city\": \"Уфа\", \"forecast\": [\"+2\", \"0\", \"-1\"]}"},
        {"role": "assistant", "content": "В Казани от +3 до +7, в Уфе от −1 до +2."},
        {"role": "user", "content": "<tool_response>\nне инструмент, а текст пользователя\n</tool_response>"},
    ],
    "tool_calls_no_content": [
        {"role": "user", "content": "Переведи «добрый вечер» на татарский."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"name": "translate", "arguments": {"text": "добрый вечер", "target": "tt", "quote": "\"\\\t"}},
            ],
        },
        {"role": "tool", "content": "хәерле кич"},
    ],
    "tool_call_string_arguments": [
        {"role": "user", "content": "Weather in Kazan?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Kazan\"}"}}],
        },
        {"role": "tool", "content": "sunny, +20"},
        {"role": "assistant", "content": "It is sunny, +20."},
    ],
    "roles_do_not_alternate": [
        {"role": "user", "content": "Первое."},
        {"role": "user", "content": "Второе подряд."},
    ],
}

# (template, conversation, tools?, extra variables) combinations; each renders with add_generation_prompt
# false and true.
ALL_PLAIN = [
    "ru_system_multi_turn",
    "tt_no_system",
    "en_single_user",
    "ru_ends_with_assistant",
    "whitespace_and_escapes",
    "empty_system",
]
PLAN = []
for name in ["qwen3", "chatml", "zephyr", "llama-2-chat"]:
    for conv in ALL_PLAIN:
        PLAN.append((name, conv, False, {}))
for name in ["qwen3", "chatml"]:
    for conv in ["reasoning_content", "reasoning_last_turn", "reasoning_under_other_names"]:
        PLAN.append((name, conv, False, {}))
    for conv in ["tool_calls", "tool_calls_no_content", "tool_call_string_arguments"]:
        PLAN.append((name, conv, True, {}))
    PLAN.append((name, "tool_calls", False, {}))
    PLAN.append((name, "en_single_user", True, {}))
PLAN.append(("qwen3", "ru_system_multi_turn", False, {"enable_thinking": False}))
PLAN.append(("qwen3", "reasoning_content", False, {"enable_thinking": True}))
PLAN.append(("zephyr", "reasoning_content", False, {}))
PLAN.append(("zephyr", "tool_calls", True, {}))
PLAN.append(("llama-2-chat", "reasoning_last_turn", False, {}))
PLAN.append(("llama-2-chat", "roles_do_not_alternate", False, {}))
PLAN.append(("llama-2-chat", "tool_calls", False, {}))


# Interpreter snippets: rendered by the same Jinja2 environment as apply_chat_template (trim_blocks,
# lstrip_blocks, transformers' tojson/raise_exception/namespace), with the given variables.
SNIPPET_VARS = {
    "msgs": [
        {"role": "system", "content": "Система"},
        {"role": "user", "content": "Привет, мир"},
        {"role": "assistant", "content": "Сәлам!", "meta": {"score": 2.5, "tags": ["a", "b"]}},
    ],
    "words": ["Казань", "уфа", "Москва", "казань"],
    "nums": [3, 1, 2],
    "s": "  Привет, Мир!  ",
    "d": {"b": 1, "a": [1, 2.0, None, True], "c": "x\ny\t\"z\""},
    "n": None,
    "f": 2.5,
    "big": 1e20,
    "small": 0.0001,
}
SNIPPETS = [
    ("ws_dash", "a  {{- 1 -}}  b\n  {%- if true -%}  c  {%- endif -%}  d"),
    ("ws_trim_lstrip", "x\n    {% if true %}\n    y\n    {% endif %}\nz\n{# comment #}\nw"),
    ("ws_plus", "x\n    {%+ if true +%}\ny{% endif %}"),
    ("ws_var_no_trim", "{{ 'a' }}\n{{ 'b' }}\n"),
    ("ws_comment_dash", "a   {#- c -#}   b {# keep #}\nc"),
    ("raw_block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}!"),
    ("loop_vars", "{% for m in msgs %}{{ loop.index0 }}/{{ loop.index }}/{{ loop.length }}/{{ loop.revindex }}/{{ loop.revindex0 }}:{{ loop.first }}{{ loop.last }} {% endfor %}"),
    ("loop_prev_next", "{% for w in words %}[{{ loop.previtem | default('-') }}>{{ w }}>{{ loop.nextitem | default('-') }}]{% endfor %}"),
    ("loop_cycle", "{% for n in nums %}{{ loop.cycle('odd', 'even') }} {% endfor %}"),
    ("loop_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in n|default([], true) %}{{ x }}{% else %}none{% endfor %}"),
    ("loop_break_continue", "{% for n in range(10) %}{% if n == 2 %}{% continue %}{% endif %}{% if n > 5 %}{% break %}{% endif %}{{ n }}{% endfor %}"),
    ("loop_filter", "{% for m in msgs if m.role != 'system' %}{{ loop.index }}:{{ m.role }} {% endfor %}"),
    ("loop_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in d|items %}{{ k }} {% endfor %}"),
    ("loop_dict_and_string", "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'абв' %}{{ c }}.{% endfor %}"),
    ("loop_nested", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}"),
    ("scope_loop", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i * 10 %}{{ x }};{% endfor %}{{ x }}"),
    ("scope_if", "{% if true %}{% set y = 'set in if' %}{% endif %}{{ y }}"),
    ("namespace", "{% set ns = namespace(count=0, last=none) %}{% for m in msgs %}{% set ns.count = ns.count + 1 %}{% set ns.last = m.role %}{% endfor %}{{ ns.count }} {{ ns.last }}"),
    ("set_tuple_block", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}{% set block %}  inner {{ a + 1 }}  {% endset %}[{{ block }}]"),
    ("macro", "{% macro turn(role, text='(пусто)', end='\\n') %}<{{ role }}>{{ text }}{{ end }}{% endmacro %}{{ turn('user', 'Привет') }}{{ turn('bot') }}{{ turn(role='x', end='!') }}"),
    ("literals", "{{ 'a' \"b\" }} {{ 'tab\\tnl\\nq\\'\\u00e9\\x41' }} {{ 42 }} {{ 1_000 }} {{ 3.25 }} {{ 1e3 }} {{ [1, 'a', none, true, false] }} {{ {'k': 'v', 'n': 1} }} {{ (1, 'x') }} {{ (1,) }} {{ none }} {{ True }}"),
    ("print_values", "{{ f }} {{ big }} {{ small }} {{ 1/3 }} {{ 10/4 }} {{ 10/5 }} {{ d }} {{ n }} {{ msgs[2].meta }} {{ 0.1 + 0.2 }} {{ -0.5 }} {{ 123456789.0 * 1000000000 }}"),
    ("arithmetic", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ 7.5 % 2 }} {{ 1 + 2 * 3 - 4 }} {{ (1 + 2) * 3 }} {{ -nums[0] }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1] + [2] }} {{ true + 1 }}"),
    ("concat_tilde", "{{ 'n=' ~ 1 ~ none ~ true ~ [1] ~ undefined_var }}|{{ 'a' + 'b' }}"),
    ("compare_logic", "{{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 'б' > 'а' }} {{ [1, 2] < [1, 3] }} {{ 0 or 'x' }} {{ 'y' and 0 }} {{ none or n }} {{ not 0 }} {{ 1 in nums }} {{ 'ив' in 'Привет' }} {{ 'a' not in d }} {{ 'b' in d }} {{ undefined_var == undefined_other }} {{ n == none }}"),
    ("ternary", "{{ 'yes' if nums else 'no' }}|{{ 'yes' if [] else 'no' }}|{{ 'x' if false }}|{{ 1 if n is none else 2 }}"),
    ("tests", "{{ n is none }} {{ n is not none }} {{ x is defined }} {{ d is defined }} {{ s is string }} {{ f is number }} {{ 3 is integer }} {{ f is float }} {{ true is boolean }} {{ d is mapping }} {{ nums is sequence }} {{ s is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ false is sameas false }} {{ 'a' is eq 'a' }} {{ 2 is gt 1 }} {{ 'ABC' is upper }} {{ 'abc' is lower }} {{ 1 is in nums }} {{ true is true }} {{ 0 is false }}"),
    ("attr_item", "{{ msgs[0].role }} {{ msgs[0]['content'] }} {{ msgs[-1].meta.tags[1] }} {{ msgs[5] is defined }} {{ msgs[0].missing is defined }} {{ d['c'] }} {{ s[2] }} {{ s[-3] }} {{ nums.0 }}"),
    ("slicing", "{{ nums[1:] }} {{ nums[::-1] }} {{ nums[-2:] }} {{ nums[:1] }} {{ nums[::2] }} {{ nums[5:] }} {{ s[2:8] }} {{ s[::-1] }} {{ words[1:3] }} {{ msgs[1:]|length }} {{ nums[-10:10:1] }} {{ 'абвгд'[4:0:-2] }}"),
    ("string_methods", "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ s.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ '  a  b '.split(None, 1) }}|{{ s.strip().startswith('Прив') }}|{{ 'x.txt'.endswith(('.md', '.txt')) }}|{{ 'Привет Мир'.upper() }}|{{ 'ÄÖÜ Әә'.lower() }}|{{ 'hello wORLD'.title() }}|{{ 'мИР'.capitalize() }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'abcabc'.find('c') }}|{{ 'абвабв'.rfind('б') }}|{{ 'abcabc'.count('bc') }}|{{ '-'.join(['x', 'y']) }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '123'.isdigit() }}"),
    ("think_split", "{% set c = msgs[2].content ~ '<think>\\nразмышление\\n</think>\\n\\nответ' %}{{ c.split('</think>')[-1].lstrip('\\n') }}|{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}"),
    ("filters_text", "{{ s|trim }}|{{ 'xxhixx'|trim('x') }}|{{ s|length }}|{{ s|lower }}|{{ s|upper }}|{{ 'hello wORLD-foo(bar)'|title }}|{{ 'мИР'|capitalize }}|{{ 'a-b-c'|replace('-', '+') }}|{{ 'a-b-c'|replace('-', '', 1) }}|{{ 'ab'|reverse }}|{{ 3|string ~ 'x' }}|{{ '  два слова '|wordcount }}|{{ '%s и %d'|format('кот', 3) }}|{{ '<a href=\"x\">'|e }}"),
    ("filters_seq", "{{ nums|length }} {{ nums|count }} {{ nums|first }} {{ nums|last }} {{ nums|sort }} {{ nums|sort(reverse=true) }} {{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ words|unique|list }} {{ nums|reverse|list }} {{ nums|sum }} {{ nums|min }} {{ nums|max }} {{ words|join(', ') }} {{ nums|join }} {{ 'abc'|list }} {{ d|list }} {{ []|first is defined }}"),
    ("filters_dict", "{{ d|items|list }} {{ d|dictsort }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.get('b') }} {{ d.get('zz', 'dflt') }} {{ d.get('zz') }} {{ d|length }}"),
    ("filters_default", "{{ x|default('dflt') }} {{ n|default('dflt') }} {{ ''|default('dflt') }} {{ ''|default('dflt', true) }} {{ x|d('short') }} {{ msgs[0].missing|default('m') }}"),
    ("filters_select_map", "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ msgs|rejectattr('role', 'eq', 'user')|map(attribute='role')|join(',') }} {{ msgs|selectattr('meta')|list|length }} {{ msgs|selectattr('meta', 'defined')|map(attribute='meta.score')|first }} {{ nums|select('odd')|list }} {{ nums|reject('odd')|list }} {{ words|map('upper')|list }} {{ msgs|map(attribute='nope', default='?')|list }} {{ msgs|map(attribute='role')|unique|list }}"),
    ("filters_numbers", "{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 3|float }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 2.1|round(method='ceil') }} {{ true|int }}"),
    ("tojson", "{{ d|tojson }}|{{ msgs[2]|tojson }}|{{ 'Привет \"мир\" \\\\ / \\u0001 🙂'|tojson }}|{{ nums|tojson(indent=2) }}|{{ d|tojson(indent=2) }}|{{ {}|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ 'ü'|tojson(ensure_ascii=true) }}|{{ f|tojson }}|{{ n|tojson }}|{{ [1, [2, {}], []]|tojson(indent=1) }}|{{ d|tojson(separators=(',', ':')) }}"),
    ("indent_filter", "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent('> ', blank=true) }}"),
    ("dict_global", "{% set x = dict(a=1, b='два') %}{{ x }} {{ x.a }} {{ dict({'z': 0}, y=1) }} {{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3, 0, -1)|list }}"),
    ("generation_tag", "{% for m in msgs %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.role }}:{% endif %}{% endfor %}"),
    ("unicode_length", "{{ 'Сәлам, дөнья! 🙂'|length }} {{ 'Сәлам'[1] }} {{ 'Сәлам'|list }} {{ 'Сәлам'.upper() }} {{ 'ЯЗ'|lower }}"),
    ("crlf_and_trailing_newline", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\n"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("TINYLM_DATA_DIR", os.path.join(REPO, "..", "shared", "data")))
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()

    tok_dir = os.path.join(args.data, "tokenizers")
    with open(os.path.join(tok_dir, "qwen3", "tokenizer_config.json"), encoding="utf-8") as f:
        qwen3_template = json.load(f)["chat_template"]
    qwen_tok = AutoTokenizer.from_pretrained(os.path.join(tok_dir, "qwen3"))
    llama_tok = AutoTokenizer.from_pretrained(os.path.join(tok_dir, "llama2"))
    assert llama_tok.chat_template is None, "the llama2 tokenizer now has a chat template: test it"

    templates = {
        "qwen3": (qwen3_template, qwen_tok, "Qwen3: chat_template of tokenizers/qwen3/tokenizer_config.json (Apache-2.0)"),
        "chatml": (CHATML, qwen_tok, "Qwen2.5-Instruct (Qwen/Qwen2.5-0.5B-Instruct tokenizer_config.json, Apache-2.0)"),
        "zephyr": (ZEPHYR, llama_tok, "TinyLlama/TinyLlama-1.1B-Chat-v1.0 tokenizer_config.json (Apache-2.0)"),
        "llama-2-chat": (LLAMA2_CHAT, llama_tok, "meta-llama/Llama-2-7b-chat-hf tokenizer_config.json (Llama 2 Community Licence)"),
    }

    cases = []
    for name, conv, with_tools, extra in PLAN:
        source, tok, _ = templates[name]
        for agp in (False, True):
            case = {"template": name, "conversation": conv, "add_generation_prompt": agp, "tools": with_tools, "extra": extra}
            try:
                case["expected"] = tok.apply_chat_template(
                    CONVERSATIONS[conv],
                    tools=TOOLS if with_tools else None,
                    add_generation_prompt=agp,
                    tokenize=False,
                    chat_template=source,
                    **extra,
                )
            except jinja2.exceptions.TemplateError as e:
                case["expected_error"] = str(e)
            cases.append(case)

    from transformers.utils.chat_template_utils import _compile_jinja_template

    snippets = []
    for name, source in SNIPPETS:
        entry = {"name": name, "source": source}
        try:
            entry["expected"] = _compile_jinja_template(source).render(**SNIPPET_VARS)
        except jinja2.exceptions.TemplateError as e:
            entry["expected_error"] = str(e)
        snippets.append(entry)

    out = {
        "about": "Expected renderings of chat templates by transformers' apply_chat_template; regenerate with "
        "make_chat_reference.py. Template texts are the models' own (origins below), kept here as test data.",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "templates": {
            name: {"origin": origin, "special_tokens": tok.special_tokens_map, "source": source}
            for name, (source, tok, origin) in templates.items()
        },
        "tools": TOOLS,
        "conversations": CONVERSATIONS,
        "cases": cases,
        "snippet_variables": SNIPPET_VARS,
        "snippets": snippets,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "chat_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum("expected_error" in c for c in cases)
    print(f"wrote {path}: {len(templates)} templates, {len(cases)} cases ({n_err} expected errors), "
          f"{len(snippets)} interpreter snippets", file=sys.stderr)


if __name__ == "__main__":
    main()
