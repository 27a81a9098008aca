/**
 * Rules of the manual strategy: exact names, globs and regular expressions mapped to tiers.
 */
import { ArgumentError } from '../errors.js';

/** A rule pattern: an exact name, a glob, a `/pattern/flags` string or a RegExp. */
export type TierRulePattern = string | RegExp;

/** One rule of the manual strategy. */
export interface TierRule {
  pattern: TierRulePattern;
  tier: number;
}

/**
 * The manual rules, in the order they are tried: an object (in key order), a Map (in insertion
 * order) or a list. The first rule that matches a name wins.
 *
 * NOTE: JavaScript orders integer-like object keys (`"7"`) before all others. Parameter names are
 * never integers, but use a list or a Map when the order of such keys matters.
 */
export type ManualTierRules =
  | Readonly<Record<string, number>>
  | ReadonlyMap<TierRulePattern, number>
  | readonly TierRule[];

/** A rule ready to test names. */
export interface CompiledTierRule {
  /** The pattern as given, for messages. */
  pattern: string;
  kind: 'exact' | 'glob' | 'regex';
  tier: number;
  /** Tells whether the rule matches a parameter name. */
  matches(name: string): boolean;
}

/** A `/pattern/flags` string. */
const REGEX_LITERAL = /^\/(.+)\/([a-z]*)$/s;

/**
 * Compiles manual rules. A string is a regular expression when written `/pattern/flags`, a glob
 * when it contains `*` or `?`, and an exact name otherwise. In globs `*` matches any run of
 * characters without a `.`, `**` any run including dots, and `?` one character other than `.`.
 * A glob must match the whole name. A regular expression matches anywhere in the name unless it
 * is anchored with `^` and `$`.
 *
 * Throws an ArgumentError with code `SCHEDULER_INVALID_OPTION` for a tier outside
 * `0..numTiers-1` or a pattern that does not compile.
 */
export function compileTierRules(rules: ManualTierRules, numTiers: number): CompiledTierRule[] {
  const entries: TierRule[] = Array.isArray(rules)
    ? [...(rules as readonly TierRule[])]
    : rules instanceof Map
      ? [...(rules as ReadonlyMap<TierRulePattern, number>)].map(([pattern, tier]) => ({ pattern, tier }))
      : Object.entries(rules as Readonly<Record<string, number>>).map(([pattern, tier]) => ({ pattern, tier }));

  return entries.map((rule) => {
    const patternText = String(rule.pattern);
    if (!Number.isInteger(rule.tier) || rule.tier < 0 || rule.tier >= numTiers) {
      throw new ArgumentError(
        'SCHEDULER_INVALID_OPTION',
        `tierMap rule ${patternText} maps to tier ${String(rule.tier)}, but tiers are integers from 0 to ${numTiers - 1}. Fix the tier of this rule.`,
        { details: { field: 'tierMap', pattern: patternText, tier: rule.tier } },
      );
    }
    return { ...compilePattern(rule.pattern), pattern: patternText, tier: rule.tier };
  });
}

function compilePattern(pattern: TierRulePattern): Pick<CompiledTierRule, 'kind' | 'matches'> {
  if (pattern instanceof RegExp) {
    return regexRule(pattern.source, pattern.flags, String(pattern));
  }
  if (typeof pattern !== 'string' || pattern === '') {
    throw new ArgumentError(
      'SCHEDULER_INVALID_OPTION',
      `tierMap pattern ${String(pattern)} is invalid: a pattern is a non-empty string or a RegExp.`,
      { details: { field: 'tierMap', pattern: String(pattern) } },
    );
  }

  const literal = REGEX_LITERAL.exec(pattern);
  if (literal !== null) {
    return regexRule(literal[1] as string, literal[2] as string, pattern);
  }
  if (/[*?]/.test(pattern)) {
    const glob = globToRegExp(pattern);
    return { kind: 'glob', matches: (name) => glob.test(name) };
  }
  return { kind: 'exact', matches: (name) => name === pattern };
}

/** Builds the rule without the `g` and `y` flags, which would make `test` depend on earlier calls. */
function regexRule(source: string, flags: string, patternText: string): Pick<CompiledTierRule, 'kind' | 'matches'> {
  let regex: RegExp;
  try {
    regex = new RegExp(source, flags.replace(/[gy]/g, ''));
  } catch (error) {
    throw new ArgumentError(
      'SCHEDULER_INVALID_OPTION',
      `tierMap pattern ${patternText} is not a valid regular expression: ${(error as Error).message}. Fix the pattern, or drop the slashes to match the name exactly.`,
      { cause: error, details: { field: 'tierMap', pattern: patternText } },
    );
  }
  return { kind: 'regex', matches: (name) => regex.test(name) };
}

function globToRegExp(glob: string): RegExp {
  let source = '';
  for (let index = 0; index < glob.length; index += 1) {
    const character = glob[index] as string;
    if (character === '*' && glob[index + 1] === '*') {
      source += '.*';
      index += 1;
    } else if (character === '*') {
      source += '[^.]*';
    } else if (character === '?') {
      source += '[^.]';
    } else {
      source += character.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`, 's');
}
