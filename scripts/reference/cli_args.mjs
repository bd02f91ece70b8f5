// Command-line parsing shared by the st-server test scripts: --name value or --name=value, all
// flags, nothing positional. Throws Error with a message naming the problem.
export function parseArgs(argv, required = []) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument '${a}'`);
    const eq = a.indexOf('=');
    if (eq >= 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      out[a.slice(2)] = argv[++i];
    }
  }
  for (const k of required) if (!out[k]) throw new Error(`--${k} is required`);
  return out;
}
