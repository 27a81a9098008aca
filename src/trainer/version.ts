import { version } from '../../package.json';

/** The package version, recorded in checkpoint metadata. The bundler inlines it from package.json. */
export const LIBRARY_VERSION: string = version;
