/**
 * `nested-learning generate`: text from the base model, with an adapter when one is given.
 */
import { Command, Option } from 'commander';

import { ArgumentError, initBackend, loadCausalLM, loadTokenizer, readAdapter, type BackendName, type LoraAdapter } from '../../index.js';
import { embeddedDefaultPaths } from '../../index.js';
import type { Terminal } from '../terminal.js';

interface GenerateFlags {
  model?: string;
  adapter?: string;
  prompt: string;
  chat?: boolean;
  maxNewTokens: string;
  temperature: string;
  topK: string;
  topP: string;
  seed: string;
  backend: BackendName | 'auto';
}

/** Builds the `generate` command. */
export function generateCommand(terminal: () => Terminal): Command {
  return new Command('generate')
    .summary('generate text with the base model and an adapter')
    .description('Generate a continuation of a prompt with the base model, and with a LoRA adapter (PEFT, mlx_lm or a checkpoint folder) when --adapter is given.')
    .requiredOption('-p, --prompt <text>', 'prompt text')
    .option('-m, --model <folder>', 'Hugging Face base model folder (default: the embedded tiny Qwen2 model)')
    .option('-a, --adapter <folder>', 'LoRA adapter or checkpoint folder; without it the base model alone generates')
    .option('--chat', 'wrap the prompt as a user message with the tokenizer\'s chat template')
    .option('--max-new-tokens <count>', 'maximum number of tokens to generate', '64')
    .option('--temperature <value>', 'softmax temperature; 0 picks the most likely token (greedy)', '0')
    .option('--top-k <count>', 'sample from the k most likely tokens only; 0 turns the filter off', '0')
    .option('--top-p <value>', 'sample from the smallest set of tokens whose probabilities sum to at least p; 1 turns the filter off', '1')
    .option('--seed <integer>', 'seed of the sampling', '0')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'))
    .action(async (flags: GenerateFlags) => {
      const text = await generateText(flags);
      terminal().out.write(`${text}\n`);
    });
}

async function generateText(flags: GenerateFlags): Promise<string> {
  const maxNewTokens = integerFlag('--max-new-tokens', flags.maxNewTokens, 1);
  const temperature = numberFlag('--temperature', flags.temperature);
  const topK = integerFlag('--top-k', flags.topK, 0);
  const topP = numberFlag('--top-p', flags.topP);
  const seed = integerFlag('--seed', flags.seed, 0);
  const modelFolder = flags.model ?? embeddedDefaultPaths().baseModelPath;

  await initBackend({ backend: flags.backend });
  const tokenizer = await loadTokenizer(modelFolder);
  const promptIds = flags.chat === true
    ? tokenizer.applyChatTemplate([{ role: 'user', content: flags.prompt }], { tokenize: true, addGenerationPrompt: true })
    : tokenizer.encode(flags.prompt);
  if (promptIds.length === 0) {
    throw new ArgumentError('CLI_EMPTY_PROMPT', 'The prompt encodes to no tokens. Pass a non-empty --prompt.');
  }

  let adapter: LoraAdapter | undefined;
  try {
    adapter = flags.adapter === undefined ? undefined : await readAdapter(flags.adapter);
    const model = await loadCausalLM(modelFolder, adapter === undefined ? {} : { adapter });
    try {
      const [generated] = model.generate(promptIds, {
        maxNewTokens,
        temperature,
        topK,
        topP,
        seed,
        stopTokenIds: [tokenizer.eosTokenId],
        padTokenId: tokenizer.padTokenId,
      });
      const continuation = tokenizer.decode(generated ?? [], { skipSpecialTokens: true });
      // A chat reply is printed alone, and a plain-text continuation after its prompt.
      return flags.chat === true ? continuation : `${flags.prompt}${continuation}`;
    } finally {
      model.dispose();
    }
  } finally {
    for (const tensor of Object.values(adapter?.weights ?? {})) {
      tensor.dispose();
    }
  }
}

function numberFlag(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value)) {
    throw new ArgumentError('CLI_INVALID_FLAG', `Invalid value ${JSON.stringify(text)} for ${flag}. Expected a number.`, { details: { flag, value: text } });
  }
  return value;
}

function integerFlag(flag: string, text: string, minimum: number): number {
  const value = numberFlag(flag, text);
  if (!Number.isInteger(value) || value < minimum) {
    throw new ArgumentError('CLI_INVALID_FLAG', `Invalid value ${JSON.stringify(text)} for ${flag}. Expected an integer of at least ${minimum}.`, {
      details: { flag, value: text },
    });
  }
  return value;
}
