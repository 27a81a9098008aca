/** Architecture description of a causal language model, parsed from a Hugging Face `config.json`. */
export interface ModelConfig {
  /** `llama` or `qwen2` (Qwen2 and Qwen2.5 share the architecture). */
  modelType: 'llama' | 'qwen2';
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  /** Size of one attention head; `hidden_size / num_attention_heads` when the file omits it. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** The `rope_scaling` object as written in the file, or `null`. */
  ropeScaling: Record<string, unknown> | null;
  vocabSize: number;
  tieWordEmbeddings: boolean;
  /** Whether q/k/v/o projections have a bias (always true for q/k/v in Qwen2). */
  attentionBias: boolean;
  /** Whether the MLP projections have a bias. */
  mlpBias: boolean;
  /** `torch_dtype` as written in the file, for example `bfloat16`. */
  torchDtype: string | undefined;
  maxPositionEmbeddings: number | undefined;
  bosTokenId: number | undefined;
  eosTokenId: number | number[] | undefined;
}
