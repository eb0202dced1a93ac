import cliProgress from "cli-progress";
import type { DownloadReporter } from "../clip/model-download.js";

/** Decimal units, as the Hub shows file sizes: `350.2 MB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit] ?? "TB"}`;
}

const sizeOf = (size: number | undefined) => (size !== undefined ? ` ${formatBytes(size)}` : "");

/** Plain lines for logs and pipes: one when a file starts (or resumes), one when it is done. */
export function lineReporter(out: NodeJS.WritableStream): DownloadReporter {
  const sizes = new Map<string, number | undefined>();
  return {
    start(file, size, from) {
      sizes.set(file, size);
      out.write(`${file}${sizeOf(size)} …${from > 0 ? ` resuming at ${formatBytes(from)}` : ""}\n`);
    },
    progress() {},
    done(file, how) {
      out.write(how === "cached" ? `${file} already downloaded\n` : `${file}${sizeOf(sizes.get(file))} done\n`);
    },
  };
}

/** A progress bar per file, for a terminal. */
export function barReporter(out: NodeJS.WritableStream): DownloadReporter {
  let bar: cliProgress.SingleBar | undefined;
  const stop = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    start(file, size, from) {
      stop();
      bar = new cliProgress.SingleBar({
        stream: out,
        format: "{file} [{bar}] {percentage}% {received}/{size}",
        hideCursor: true,
        barsize: 30,
      });
      bar.start(size ?? 0, from, { file, received: formatBytes(from), size: size !== undefined ? formatBytes(size) : "?" });
    },
    progress(_file, received) {
      bar?.update(received, { received: formatBytes(received) });
    },
    done(file, how) {
      stop();
      if (how === "cached") out.write(`${file} already downloaded\n`);
    },
  };
}
