import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  ArgumentError,
  type ChatMessage,
  createTokenizer,
  FileFormatError,
  loadTokenizer,
  NestedLearningError,
  type Tokenizer,
} from '../src/index.js';
import { LLAMA_STYLE_FOLDER, QWEN3_FOLDER, TOKENIZER_FIXTURES } from './fixtures/tokenizer/paths.js';

const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'You are helpful.' },
  { role: 'user', content: 'Hi there' },
  { role: 'assistant', content: 'Hello! How can I help?' },
];

interface ChatFixture {
  samples: {
    name: string;
    record: { messages?: ChatMessage[]; prompt?: string; completion?: string };
    promptText: string;
    fullText: string;
  }[];
}

const chatFixture = JSON.parse(readFileSync(join(TOKENIZER_FIXTURES, 'qwen3-chat-expected.json'), 'utf8')) as ChatFixture;
const scratch = mkdtempSync(join(tmpdir(), 'nl-chat-'));
let qwenJson: unknown;
let qwenConfig: Record<string, unknown>;
let qwen: Tokenizer;
let chatml: Tokenizer;
let llama: Tokenizer;

beforeAll(async () => {
  qwenJson = JSON.parse(readFileSync(join(QWEN3_FOLDER, 'tokenizer.json'), 'utf8'));
  qwenConfig = JSON.parse(readFileSync(join(QWEN3_FOLDER, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  qwen = createTokenizer(qwenJson, qwenConfig);
  chatml = createTokenizer(qwenJson, qwenConfig, { chatTemplate: CHATML_TEMPLATE });
  llama = await loadTokenizer(LLAMA_STYLE_FOLDER);
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function llamaWithTemplate(chatTemplate: unknown): Tokenizer {
  const tokenizerJson = JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer.json'), 'utf8')) as unknown;
  const config = JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  return createTokenizer(tokenizerJson, { ...config, chat_template: chatTemplate });
}

function fixtureMessages(record: ChatFixture['samples'][number]['record']): ChatMessage[] {
  if (record.messages !== undefined) return record.messages;
  return [
    { role: 'user', content: record.prompt! },
    { role: 'assistant', content: record.completion! },
  ];
}

describe('ChatML template', () => {
  it('renders system, user and assistant exactly', () => {
    expect(chatml.applyChatTemplate(CONVERSATION)).toBe(
      '<|im_start|>system\nYou are helpful.<|im_end|>\n' +
        '<|im_start|>user\nHi there<|im_end|>\n' +
        '<|im_start|>assistant\nHello! How can I help?<|im_end|>\n',
    );
  });

  it('appends the generation prompt', () => {
    expect(chatml.applyChatTemplate(CONVERSATION.slice(0, 2), { addGenerationPrompt: true })).toBe(
      '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
    );
  });
});

describe('Qwen3 template', () => {
  it.each(chatFixture.samples.map((sample) => [sample.name, sample] as const))('renders %s as written by hand', (_, sample) => {
    const messages = fixtureMessages(sample.record);
    expect(qwen.applyChatTemplate(messages)).toBe(sample.fullText);
    expect(qwen.applyChatTemplate(messages.slice(0, -1), { addGenerationPrompt: true })).toBe(sample.promptText);
  });

  it('renders tools into the system turn', () => {
    const tools = [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'Get the weather',
          parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
        },
      },
    ];
    const text = qwen.applyChatTemplate([{ role: 'user', content: 'Weather in Oslo?' }], { tools, addGenerationPrompt: true });
    expect(text).toBe(
      '<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' +
        'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n' +
        '{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", ' +
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n' +
        '</tools>\n\nFor each function call, return a json object with function name and arguments within ' +
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n' +
        '</tool_call><|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('passes extra variables to the template', () => {
    const text = qwen.applyChatTemplate([{ role: 'user', content: 'Hi' }], {
      addGenerationPrompt: true,
      variables: { enable_thinking: false },
    });
    expect(text).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
  });

  it('tokenizes without special tokens', () => {
    const ids = qwen.applyChatTemplate(CONVERSATION, { tokenize: true });
    expect(ids).toEqual(qwen.encode(qwen.applyChatTemplate(CONVERSATION), { addSpecialTokens: false }));
    expect(ids[0]).toBe(151644);
  });
});

describe('Llama-style template with BOS', () => {
  it('starts the text with one BOS', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'the cat' },
      { role: 'assistant', content: 'the hat' },
    ];
    const text = llama.applyChatTemplate(messages);
    expect(text).toBe('<s>[INST] the cat [/INST] the hat</s>');

    const ids = llama.applyChatTemplate(messages, { tokenize: true });
    expect(ids[0]).toBe(0);
    expect(ids[1]).not.toBe(0);
    expect(ids.filter((id) => id === 0)).toHaveLength(1);
    expect(ids).toEqual(llama.encode(text));
    expect(ids[ids.length - 1]).toBe(llama.eosTokenId);
  });

  it('gets BOS added when the template has none', () => {
    const tokenizer = llamaWithTemplate("{% for message in messages %}{{ message['content'] }}{% endfor %}");
    const ids = tokenizer.applyChatTemplate([{ role: 'user', content: 'the cat' }], { tokenize: true });
    // 0 = "<s>", 262 = "the", 265 = "Ġcat".
    expect(ids).toEqual([0, 262, 265]);
  });

  it('exposes special tokens as variables', () => {
    const tokenizer = llamaWithTemplate('{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{% if tools is none %}no tools{% endif %}');
    expect(tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }])).toBe('<s>|</s>|</s>|no tools');
  });
});

describe('chat template sources', () => {
  it('picks default and tool_use from a template list', () => {
    const tokenizer = llamaWithTemplate([
      { name: 'default', template: 'plain' },
      { name: 'tool_use', template: 'with {{ tools | length }} tool' },
    ]);
    const messages: ChatMessage[] = [{ role: 'user', content: 'x' }];
    expect(tokenizer.applyChatTemplate(messages)).toBe('plain');
    expect(tokenizer.applyChatTemplate(messages, { tools: [{ name: 'f' }] })).toBe('with 1 tool');
  });

  it('reads chat_template.jinja when the config has none', async () => {
    const folder = join(scratch, 'jinja-file');
    mkdirSync(folder, { recursive: true });
    copyFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer.json'), join(folder, 'tokenizer.json'));
    const config = JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    delete config.chat_template;
    writeFileSync(join(folder, 'tokenizer_config.json'), JSON.stringify(config));
    writeFileSync(join(folder, 'chat_template.jinja'), "{{ messages[0]['content'] }}!");

    const tokenizer = await loadTokenizer(folder);
    expect(tokenizer.hasChatTemplate).toBe(true);
    expect(tokenizer.applyChatTemplate([{ role: 'user', content: 'from file' }])).toBe('from file!');
  });

  it('rejects a template with a syntax error', () => {
    const error = (() => {
      try {
        llamaWithTemplate('{% for message in messages %}unclosed');
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(FileFormatError);
    expect((error as FileFormatError).code).toBe('CHAT_TEMPLATE_INVALID');
    expect((error as Error).message).toContain('tokenizer_config.json');
  });

  it('reports raise_exception from the template', () => {
    const tokenizer = llamaWithTemplate("{{ raise_exception('Conversation roles must alternate') }}");
    const error = (() => {
      try {
        tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }]);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ArgumentError);
    expect((error as NestedLearningError).code).toBe('CHAT_TEMPLATE_RENDER_FAILED');
    expect((error as Error).message).toContain('Conversation roles must alternate');
  });

  it('reports a missing template', () => {
    const tokenizer = llamaWithTemplate(undefined);
    expect(tokenizer.hasChatTemplate).toBe(false);
    expect(() => tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(
      expect.objectContaining({ code: 'CHAT_TEMPLATE_MISSING' }),
    );
  });
});
