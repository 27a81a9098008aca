export {
  type ApplyChatTemplateOptions,
  type CreateTokenizerOptions,
  createTokenizer,
  type DecodeOptions,
  type EncodeOptions,
  loadTokenizer,
  type Tokenizer,
} from './tokenizer.js';
export {
  type ChatMessage,
  type ChatTemplateOptions,
  type CompiledChatTemplate,
  compileChatTemplate,
  renderChatTemplate,
  selectChatTemplate,
  type TemplateSpecialTokens,
} from './chat-template.js';
export { CHAT_ROLES, type DatasetFormat, type DatasetRecord, parseRecord, type RecordFields, type RecordLocation } from './records.js';
export { type DatasetSample, encodeRecord, type EncodeRecordOptions, sharedPrefixLength } from './samples.js';
export {
  type Dataset,
  datasetFromRecords,
  type DatasetStats,
  loadDataset,
  type LoadDatasetOptions,
  type TruncationSide,
} from './dataset.js';
export {
  type Batch,
  BatchIterator,
  type BatchIteratorOptions,
  type BatchIteratorState,
  type BatchSample,
  type BatchSource,
  evalBatches,
  type EvalBatchesOptions,
  makeBatch,
  type MakeBatchOptions,
} from './batching.js';
export { combineLossSums, type LossSum } from './loss.js';
