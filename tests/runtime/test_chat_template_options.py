"""vLLM's chat-template extras on /v1/chat/completions: ``add_generation_prompt``,
``continue_final_message`` (prefilling the assistant's answer) and ``chat_template_kwargs``
(template variables such as Qwen3's ``enable_thinking``), through the real OpenAI client."""

from __future__ import annotations

import openai
import pytest

from kaito_core.runtime.protocol import parse_chat

PREFILL = [{"role": "user", "content": "Count with me."}, {"role": "assistant", "content": "One, two,"}]
# a template that reads a variable, as Qwen3's reads enable_thinking
THINKING = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% if enable_thinking is defined and not enable_thinking %}"
            "NO-THINK {% endif %}{% endif %}")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def prompt_of(server, **body) -> str:
    return server.service.prepare(parse_chat({"messages": PREFILL, **body})).prompt_text


def test_continue_final_message_prefills_the_answer(server, client):
    prefilled = prompt_of(server, continue_final_message=True)
    assert prefilled.endswith("One, two,")            # the last message is left open
    assert prompt_of(server).endswith("<|assistant|>\n")  # default: a new assistant turn
    assert prompt_of(server, add_generation_prompt=False).endswith("One, two,<|end|>\n")
    resp = client.chat.completions.create(model="tiny-llama", messages=PREFILL, max_tokens=3, temperature=0,
                                          extra_body={"continue_final_message": True})
    default = client.chat.completions.create(model="tiny-llama", messages=PREFILL, max_tokens=3, temperature=0)
    assert resp.usage.prompt_tokens < default.usage.prompt_tokens


def test_chat_template_kwargs_reach_the_template(server, client, monkeypatch):
    monkeypatch.setattr(server.service.loaded, "chat_template", THINKING)
    assert prompt_of(server, chat_template_kwargs={"enable_thinking": False}).endswith("NO-THINK ")
    assert not prompt_of(server, chat_template_kwargs={"enable_thinking": True}).endswith("NO-THINK ")
    resp = client.chat.completions.create(model="tiny-llama", messages=PREFILL[:1], max_tokens=2,
                                          extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    plain = client.chat.completions.create(model="tiny-llama", messages=PREFILL[:1], max_tokens=2)
    assert resp.usage.prompt_tokens > plain.usage.prompt_tokens


@pytest.mark.parametrize("extra,param", [
    ({"continue_final_message": True, "add_generation_prompt": True}, "continue_final_message"),
    ({"add_generation_prompt": "yes"}, "add_generation_prompt"),
    ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"tokenize": True}}, "chat_template_kwargs.tokenize"),
    ({"chat_template_kwargs": {"not a name": 1}}, "chat_template_kwargs.not a name"),
])
def test_bad_template_options_are_400s_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny-llama", messages=PREFILL, max_tokens=2, extra_body=extra)
    assert exc.value.body["param"] == param, exc.value.body
