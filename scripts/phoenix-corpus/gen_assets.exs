# Writes the benchmark corpus's priv/static as `mix assets.deploy` leaves it
# (scripts/make-phoenix-corpus.sh):   elixir gen_assets.exs STATIC_DIR
#
# 1. Sources, as esbuild/tailwind would bundle them: real JavaScript and CSS
#    from Debian's libjs-* packages concatenated into bundles (assets/app.js:
#    minified libraries; assets/admin.js: unminified ones; assets/app.css),
#    real web fonts (font-awesome, KaTeX), and PNG images of photo-like
#    content (gradients plus sensor noise, deflated by :zlib as any PNG is:
#    incompressible), a favicon and robots.txt.
# 2. phx.digest's output beside them (the rules of Phoenix.Digester, written
#    here, no Phoenix needed): for every file NAME.EXT also NAME-MD5.EXT (CSS
#    with url(...) references rewritten to the digested names), and for the
#    gzippable extensions (.js .map .css .txt .text .html .json .svg .eot .ttf)
#    NAME.EXT.gz and NAME-MD5.EXT.gz made with :zlib.gzip, and
#    cache_manifest.json (with mtime 0 instead of the clock, so that two runs
#    give the same bytes).
[static] = System.argv()
js = "/usr/share/javascript"

read = fn rel ->
  path = Path.join(js, rel)
  File.exists?(path) || raise "missing #{path} (scripts/install-deps.sh installs the libjs-* packages)"
  File.read!(path)
end

bundle = fn out, parts ->
  body =
    Enum.map(parts, fn rel -> ["// ", rel, "\n", read.(rel), "\n;\n"] end)
  File.mkdir_p!(Path.dirname(Path.join(static, out)))
  File.write!(Path.join(static, out), body)
end

bundle.("assets/app.js", ~w(
  vue/vue.min.js chart.js/chart.min.js d3/d3.min.js lodash/lodash.min.js
  moment/moment-with-locales.min.js sortable/Sortable.min.js leaflet/leaflet.min.js
  bootstrap5/js/bootstrap.bundle.min.js katex/katex.min.js highlight.js/highlight.min.js))
bundle.("assets/admin.js", ~w(
  jquery-ui/jquery-ui.js codemirror/lib/codemirror.js codemirror/keymap/vim.js
  chart.js/chart.js moment/moment.js lodash/lodash.js))
bundle.("assets/vendor/editor.js", ~w(codemirror/keymap/sublime.js katex/contrib/mhchem.js))

# CSS: font and image references point at ../fonts and ../images, as a
# tailwind/esbuild build with copied vendor assets does.
css =
  ~w(bootstrap5/css/bootstrap.css font-awesome/css/font-awesome.css katex/katex.css
     leaflet/leaflet.css jquery-ui/themes/base/jquery-ui.css)
  |> Enum.map(fn rel ->
    read.(rel)
    |> String.replace("../fonts/", "../fonts/")
    |> String.replace(~r{url\((['"]?)fonts/}, "url(\\1../fonts/")
    |> String.replace(~r{url\((['"]?)images/}, "url(\\1../images/")
  end)
File.write!(Path.join(static, "assets/app.css"), Enum.intersperse(css, "\n"))

fonts = Path.join(static, "fonts")
File.mkdir_p!(fonts)
for f <- Path.wildcard(Path.join(js, "font-awesome/fonts/*")) ++ Path.wildcard(Path.join(js, "katex/fonts/*")),
    do: File.cp!(f, Path.join(fonts, Path.basename(f)))

# PNG, RGB 8-bit, filter 0 rows; pixels = smooth gradient + 4 bits of
# deterministic noise (AES-CTR keystream), like a photo's grain.
crc = fn type, data -> <<:erlang.crc32([type, data])::32>> end
chunk = fn type, data -> [<<byte_size(data)::32>>, type, data, crc.(type, data)] end
png = fn w, h, seed ->
  key = :crypto.hash(:md5, "guildhall-corpus-images")
  noise = :crypto.crypto_one_time(:aes_128_ctr, key, :crypto.hash(:md5, seed), :binary.copy(<<0>>, w * h * 3), true)
  rows =
    for y <- 0..(h - 1) do
      line = binary_part(noise, y * w * 3, w * 3)
      px =
        for <<r::8, g::8, b::8 <- line>>, into: <<>> do
          <<Bitwise.band(r, 15) + div(y * 200, h)::8, Bitwise.band(g, 15) + 90::8, Bitwise.band(b, 15) + 40::8>>
        end
      [0, px]
    end
  z = :zlib.compress(rows)
  IO.iodata_to_binary([<<137, "PNG", 13, 10, 26, 10>>, chunk.("IHDR", <<w::32, h::32, 8, 2, 0, 0, 0>>),
    chunk.("IDAT", z), chunk.("IEND", "")])
end
images = Path.join(static, "images")
File.mkdir_p!(images)
for {name, w, h} <- [{"hero", 1024, 576}, {"hero-mobile", 480, 640}, {"guild-hall", 800, 533},
                     {"banner", 1000, 250}, {"members", 640, 427}, {"event-1", 480, 320},
                     {"event-2", 480, 320}, {"event-3", 480, 320}, {"map-tiles", 512, 256},
                     {"avatar-default", 128, 128}, {"logo", 256, 256}, {"og-card", 800, 420}] do
  File.write!(Path.join(images, name <> ".png"), png.(w, h, name))
end
File.write!(Path.join(static, "favicon.ico"), png.(32, 32, "favicon"))
File.write!(Path.join(static, "robots.txt"), "# See https://www.robotstxt.org/robotstxt.html\nUser-agent: *\nDisallow: /admin\n")

# --- phx.digest -----------------------------------------------------------
gzippable = ~w(.js .map .css .txt .text .html .json .svg .eot .ttf)
files =
  Path.wildcard(Path.join(static, "**"))
  |> Enum.reject(&File.dir?/1)
  |> Enum.sort()
  |> Enum.map(fn path ->
    rel = Path.relative_to(path, static)
    content = File.read!(path)
    digest = Base.encode16(:erlang.md5(content), case: :lower)
    ext = Path.extname(rel)
    digested = Path.join(Path.dirname(rel), Path.basename(rel, ext) <> "-" <> digest <> ext) |> Path.relative()
    %{rel: rel, content: content, digest: digest, digested: digested, size: byte_size(content)}
  end)
latest = Map.new(files, &{&1.rel, &1.digested})

rewrite_css = fn f ->
  Regex.replace(~r{(url\(\s*)(['"]?)([^'")\s]+)(['"]?)(\s*\))}, f.content, fn whole, open, q1, url, q2, close ->
    [path | _] = String.split(url, ["?", "#"], parts: 2)
    target = Path.join(Path.dirname(f.rel), path) |> Path.expand("/") |> Path.relative_to("/")
    case Map.fetch(latest, target) do
      {:ok, dig} -> open <> q1 <> Path.join(Path.dirname(path), Path.basename(dig)) <> "?vsn=d" <> q2 <> close
      :error -> whole
    end
  end)
end

for f <- files do
  digested_content = if Path.extname(f.rel) == ".css", do: rewrite_css.(f), else: f.content
  if Path.extname(f.rel) in gzippable do
    File.write!(Path.join(static, f.digested <> ".gz"), :zlib.gzip(digested_content))
    File.write!(Path.join(static, f.rel <> ".gz"), :zlib.gzip(f.content))
  end
  File.write!(Path.join(static, f.digested), digested_content)
end

json = fn map ->
  map
  |> Enum.sort()
  |> Enum.map_join(",", fn {k, v} -> inspect(k) <> ":" <> v end)
  |> then(&("{" <> &1 <> "}"))
end
digests =
  json.(Map.new(files, fn f ->
    {f.digested, json.(%{"digest" => inspect(f.digest), "logical_path" => inspect(f.rel), "mtime" => "0", "size" => "#{f.size}", "sha512" => inspect(Base.encode64(:crypto.hash(:sha512, f.content)))})}
  end))
File.write!(Path.join(static, "cache_manifest.json"),
  json.(%{"digests" => digests, "latest" => json.(Map.new(latest, fn {k, v} -> {k, inspect(v)} end)), "version" => "1"}))
