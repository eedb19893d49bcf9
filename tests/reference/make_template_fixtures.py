"""make_template_fixtures: reference renderings of the supported chat templates.

Writes tests/fixtures/templates/<family>.json (the REAL template text, and for a
set of conversations the exact string transformers' apply_chat_template(...,
tokenize=False) renders) and tests/fixtures/templates/python_whitespace.json
(every code point for which Python's str.isspace() is true, plus str.strip()
cases). tests/test_chat_template*.c compare the C renderers with these.

Run (from the repository root), in the reference env:
    ~/.cache/kvzap/refenv/bin/python tests/reference/make_template_fixtures.py
PyPI packages: transformers (5.x), tokenizers, jinja2, gguf, numpy.
Inputs (scripts/fetch-assets puts them in ~/.cache/kvzap):
  - SmolLM2-135M-Instruct.Q4_1.gguf: its tokenizer.chat_template (chatml-smollm2)
  - tokenizers/qwen3/tokenizer_config.json: the Qwen3 template; its tokenizer
    renders the ChatML families
  - tokenizers/llama3: the Llama-3.2 tokenizer (bos_token <|begin_of_text|>),
    used to render the Llama-3 templates below
Template texts not available as local files are pinned here, verbatim as
published in the model repositories' tokenizer_config.json:
  - llama3:   meta-llama/Meta-Llama-3-8B-Instruct
  - llama3.1: meta-llama/Llama-3.1-8B-Instruct (same as Llama-3.3-70B-Instruct)
  - qwen2:    Qwen/Qwen2.5-7B-Instruct
"""
import json
import os
import sys

from gguf import GGUFReader
from transformers import AutoTokenizer

CACHE = os.path.expanduser(os.environ.get("KVZAP_CACHE", "~/.cache/kvzap"))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "templates")

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

LLAMA31_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

QWEN25_TEMPLATE = r"""{%- if tools %}
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

REPEAT = "\n\nRepeat the previous context exactly."

# Document texts for the spec 1.1 repeat prompt: leading/trailing ASCII and
# Unicode whitespace (Python str.strip semantics), special-token strings,
# think tags, and text that is all whitespace.
REPEAT_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  \t\n Leading and trailing ASCII whitespace.\n\n  \r\n",
    "\u3000\u00a0\u2003 Unicode spaces around \u2009text \u205f\u202f\u2028\u2029\u0085\x1c\x1d\x1e\x1f\x0b\x0c",
    "\u200b zero-width space and U+180E\u180e are not whitespace \ufeff",
    "First line.\n\nSecond paragraph with  double  spaces.\n\tIndented line.",
    "A document that mentions </think> in the middle and ends with </think>",
    "<think>\nreasoning-like prefix\n</think>\n\nthen the answer",
    "Contains special strings <|im_end|> and <|im_start|>user and <|eot_id|> <|begin_of_text|>",
    "Non-ASCII: naïve café, 日本語のテキスト, emoji 🙂, Ελληνικά, combining e\u0301.",
    " \n\t ",
    "x",
]


def conversations():
    """(name, messages, kwargs) for the general renderer."""
    sys_user_asst = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    multi = sys_user_asst + [
        {"role": "user", "content": "  And 3+3?  "},
        {"role": "assistant", "content": "\n\n6\n"},
    ]
    no_system = [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Bye."},
    ]
    thinking = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nfirst thoughts\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "<think>\n\nsecond thoughts\n\n</think>\n\n\nA2\n"},
    ]
    after_query = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>plan</think>step one"},
        {"role": "assistant", "content": "no think tags here"},
        {"role": "assistant", "content": "final\n"},
    ]
    odd_think = [
        {"role": "user", "content": "<tool_response>not a real query</tool_response>"},
        {"role": "assistant", "content": "a</think>b</think>\nc <think>x"},
        {"role": "user", "content": "x <think>one<think>two\n</think>\nrest"},
        {"role": "assistant", "content": "pre<think>r1<think>\nr2\n</think>mid</think>\n\nend"},
    ]
    tool_wrapped_last = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "real query"},
        {"role": "assistant", "content": "<think>t</think>answer"},
        {"role": "user", "content": "<tool_response>\nresult\n</tool_response>"},
        {"role": "assistant", "content": "<think>\nmore</think>done"},
    ]
    late_system = [
        {"role": "user", "content": "u"},
        {"role": "system", "content": "  mid-conversation system  "},
        {"role": "assistant", "content": "a"},
    ]
    user_only = [{"role": "user", "content": "Just a question?"}]
    system_only = [{"role": "system", "content": "  only a system prompt \n"}]
    return [
        ("sys_user_asst", sys_user_asst, {}),
        ("multi_turn", multi, {}),
        ("multi_turn_genprompt", multi[:-1], {"add_generation_prompt": True}),
        ("no_system", no_system, {}),
        ("no_system_genprompt", no_system, {"add_generation_prompt": True}),
        ("thinking_history", thinking, {}),
        ("after_query", after_query, {}),
        ("odd_think_tags", odd_think, {}),
        ("tool_wrapped_last_user", tool_wrapped_last, {}),
        ("late_system", late_system, {}),
        ("user_only", user_only, {}),
        ("user_only_genprompt", user_only, {"add_generation_prompt": True}),
        ("user_only_genprompt_nothink", user_only,
         {"add_generation_prompt": True, "enable_thinking": False}),
        ("multi_genprompt_nothink", multi[:-1],
         {"add_generation_prompt": True, "enable_thinking": False}),
        ("system_only", system_only, {}),
    ]


def render(tok, template, messages, **kw):
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, **kw)


def cases_for(tok, template, family):
    cases = []
    for i, text in enumerate(REPEAT_TEXTS):
        t = text.strip()
        msgs = [{"role": "user", "content": t + REPEAT}, {"role": "assistant", "content": t}]
        cases.append({"name": f"repeat_{i}", "kind": "repeat", "text": text,
                      "expected": render(tok, template, msgs)})
    for name, msgs, kw in conversations():
        case = {"name": name, "kind": "messages", "messages": msgs,
                "add_generation_prompt": bool(kw.get("add_generation_prompt", False)),
                "enable_thinking": kw.get("enable_thinking", True),
                "expected": render(tok, template, msgs, **kw)}
        cases.append(case)
    if family == "llama3.1":
        msgs = [{"role": "user", "content": "date?"}]
        cases.append({"name": "custom_date", "kind": "messages", "messages": msgs,
                      "add_generation_prompt": True, "enable_thinking": True,
                      "date_string": "01 Jan 2025",
                      "expected": render(tok, template, msgs, add_generation_prompt=True,
                                         date_string="01 Jan 2025")})
    return cases


def gguf_template(path):
    r = GGUFReader(path)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def write(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as fp:
        json.dump(obj, fp, ensure_ascii=False, indent=1)
        fp.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


def whitespace_fixture():
    ws = [cp for cp in range(0x110000) if chr(cp).isspace()]
    samples = ["", " ", "a", " a ", "\u3000a\u3000", "\x1c\x1fa b\x85", "\u200ba\u200b",
               "\u180ea\u180e", "\ufeffa", "\u2028\u2029x\u2028", "  \u00a0 \n"]
    return {"isspace": ws,
            "strip": [{"input": s, "expected": s.strip()} for s in samples]}


def main():
    os.makedirs(OUT, exist_ok=True)
    qwen_tok = AutoTokenizer.from_pretrained(os.path.join(CACHE, "tokenizers", "qwen3"))
    llama_tok = AutoTokenizer.from_pretrained(os.path.join(CACHE, "tokenizers", "llama3"))
    with open(os.path.join(CACHE, "tokenizers", "qwen3", "tokenizer_config.json")) as fp:
        qwen3_template = json.load(fp)["chat_template"]
    smol_path = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
    families = [
        ("chatml-smollm2", qwen_tok, gguf_template(smol_path),
         "SmolLM2-135M-Instruct.Q4_1.gguf: tokenizer.chat_template"),
        ("qwen2", qwen_tok, QWEN25_TEMPLATE, "Qwen/Qwen2.5-7B-Instruct tokenizer_config.json"),
        ("qwen3", qwen_tok, qwen3_template, "tokenizers/qwen3/tokenizer_config.json"),
        ("llama3", llama_tok, LLAMA3_TEMPLATE,
         "meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json"),
        ("llama3.1", llama_tok, LLAMA31_TEMPLATE,
         "meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json"),
    ]
    for family, tok, template, source in families:
        write(f"{family}.json", {"family": family, "source": source, "template": template,
                                 "cases": cases_for(tok, template, family)})
    write("python_whitespace.json", whitespace_fixture())


if __name__ == "__main__":
    main()
