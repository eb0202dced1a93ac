import fs from "node:fs";
import path from "node:path";

/**
 * Calls `onChange` when the policies file changes or the process gets SIGHUP. It watches the
 * file's directory, not the file, because editors and Kubernetes ConfigMap mounts replace files
 * (rename, symlink swap) rather than write them in place. Bursts of events are debounced.
 */
export function watchPolicies(file: string, onChange: (reason: "file" | "sighup") => void, options: { watchFile: boolean; debounceMs?: number }): () => void {
  const debounceMs = options.debounceMs ?? 250;
  let timer: NodeJS.Timeout | undefined;
  const trigger = (reason: "file" | "sighup") => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => onChange(reason), reason === "sighup" ? 0 : debounceMs);
  };
  const onHup = () => trigger("sighup");
  process.on("SIGHUP", onHup);
  let watcher: fs.FSWatcher | undefined;
  if (options.watchFile) {
    const base = path.basename(file);
    watcher = fs.watch(path.dirname(path.resolve(file)), (_event, name) => {
      // ConfigMap updates swap a `..data` symlink; other names in the directory are unrelated
      if (name === null || name === base || name.startsWith("..")) trigger("file");
    });
  }
  return () => {
    process.off("SIGHUP", onHup);
    watcher?.close();
    if (timer !== undefined) clearTimeout(timer);
  };
}
