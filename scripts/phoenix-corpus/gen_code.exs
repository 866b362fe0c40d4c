# Writes the Elixir sources of the benchmark corpus (scripts/make-phoenix-corpus.sh):
#   elixir gen_code.exs deps DIR      # DIR/<app>/{mix.exs,lib/**/*.ex} for each dependency
#   elixir gen_code.exs app DIR       # DIR/*.ex: the application's own modules
#
# The modules are generated but shaped like ordinary Elixir: structs, specs,
# multi-clause functions with guards and binary patterns, case/with/cond,
# pipelines into Enum/Map/String, comprehensions, error messages, module
# attributes holding tables, and calls into the app's other modules. Their
# stripped .beam files have the byte statistics of real library code (atoms,
# literals, bytecode), which is what the compressors see. Deterministic: a
# fixed PRNG seeded by name, no :rand, no clock.
import Bitwise

defmodule Gen do
  @mask (1 <<< 64) - 1

  def seed(name), do: Process.put(:rng, :erlang.phash2(name, 1 <<< 32) * 2_654_435_761 + 1)

  def next do
    x = Process.get(:rng)
    x = bxor(x, x <<< 13 &&& @mask)
    x = bxor(x, x >>> 7)
    x = bxor(x, x <<< 17 &&& @mask)
    Process.put(:rng, x)
    x
  end

  def int(n), do: rem(next() >>> 11, n)
  def pick(list), do: Enum.at(list, int(length(list)))
  def range(lo, hi), do: lo + int(hi - lo + 1)

  @words ~w(conn params socket assigns changeset query repo schema session token
    request response header cookie router route endpoint channel topic presence
    message payload event handler listener subscriber broker pool worker supervisor
    registry cache entry record field value key index cursor offset limit page
    filter sort order scope tenant account user member role permission policy
    upload file path name label title body content format locale timezone date
    time duration interval timeout retry backoff attempt status state context
    config option setting flag feature metric counter gauge histogram span trace
    buffer chunk stream frame packet socket_ref adapter driver connection pipeline
    transaction migration constraint association preload join select where group
    having prefix suffix separator template layout component slot attr form input
    error reason detail warning notice log level encoder decoder parser lexer token_kind)

  @verbs ~w(fetch put get build parse encode decode validate normalize cast dump load
    render handle merge split join filter reduce map update delete insert lookup
    resolve expand compile prepare execute apply check ensure maybe wrap unwrap
    emit track measure start stop init terminate notify broadcast subscribe)

  def word, do: pick(@words)
  def verb, do: pick(@verbs)
  def camel(w), do: w |> String.split("_") |> Enum.map_join(&String.capitalize/1)
  def fname, do: "#{verb()}_#{word()}"
  def atom, do: ":" <> word()
  def str do
    n = range(2, 7)
    Enum.map_join(1..n, " ", fn _ -> pick(@words ++ ~w(the a of to is not be for with was invalid expected got must could)) end)
  end
end

defmodule CodeGen do
  import Gen

  # One function (maybe several clauses) as source text; {text, name, arity}.
  # Every variable a template uses is bound by it (no warnings, no errors).
  def function(known) do
    name = fname() <> "_#{int(1000)}"
    {text, arity} =
      case int(11) do
        0 -> {case_on_option(name), 2}
        1 -> {with_chain(name, known), 1}
        2 -> {pipeline(name), 2}
        3 -> {multi_clause(name), 1}
        4 -> {binary_parse(name), 1}
        5 -> {struct_update(name), 2}
        6 -> {recursion(name), 2}
        7 -> {comprehension(name), 2}
        8 -> {cond_fun(name), 1}
        9 -> {error_raise(name), 1}
        10 -> {map_reduce(name, known), 1}
      end
    spec = "  @spec #{name}(#{Enum.map_join(1..arity, ", ", fn _ -> "term()" end)}) :: term()\n"
    doc = if int(3) == 0, do: "  @doc \"\"\"\n  #{String.capitalize(str())}.\n\n  Returns `{:ok, #{word()}}` or `{:error, reason}`.\n  \"\"\"\n", else: ""
    {doc <> spec <> text, name, arity}
  end

  defp case_on_option(n) do
    k = word()
    """
      def #{n}(_#{word()}, opts) when is_list(opts) do
        case Keyword.get(opts, :#{k}) do
          nil -> {:error, "#{str()}"}
          :#{word()}_#{int(100)} -> {:ok, :#{word()}}
          value when is_binary(value) -> {:ok, String.trim(value)}
          value when is_integer(value) and value > #{int(100)} -> {:ok, value * #{range(2, 64)}}
          other -> {:error, {:invalid_#{k}, other}}
        end
      end
    """
  end

  defp with_chain(n, known) do
    a = word()
    b = word() <> "_state"
    c = word() <> "_found"
    call = if known == [], do: "{:ok, #{a}}", else: "{:ok, #{pick(known)}(#{a})}"
    """
      def #{n}(%{#{word()}: #{a}} = #{b}) do
        with {:ok, #{c}} <- #{call},
             true <- is_map(#{b}) || {:error, :not_a_map},
             {:ok, _value} <- Map.fetch(#{b}, :#{word()}) do
          {:ok, %{#{word()}: #{c}, source: #{inspect(str())}}}
        else
          {:error, reason} -> {:error, reason}
          :error -> {:error, "#{str()}"}
          false -> {:error, :#{word()}}
        end
      end
    """
  end

  defp pipeline(n) do
    a = word() <> "_list"
    """
      def #{n}(#{a}, _#{word()}_limit) do
        #{a}
        |> Enum.reject(&is_nil/1)
        |> Enum.map(fn {key, value} -> {to_string(key), value} end)
        |> Enum.filter(fn {key, _} -> String.starts_with?(key, "#{word()}") end)
        |> Enum.sort_by(&elem(&1, 0))
        |> Enum.take(#{range(5, 500)})
        |> Map.new()
      end
    """
  end

  defp multi_clause(n) do
    clauses =
      for i <- 1..range(3, 8) do
        case int(4) do
          0 -> "  def #{n}({:#{word()}_#{i}, value}) when is_integer(value), do: {:ok, value + #{int(999)}}\n"
          1 -> "  def #{n}(%{#{word()}_#{i}: v, #{word()}: w}), do: {:ok, [v, w]}\n"
          2 -> "  def #{n}(:#{word()}_#{i}), do: #{inspect(str())}\n"
          3 -> "  def #{n}([:#{word()}_#{i} | rest]), do: {:cont, length(rest)}\n"
        end
      end
    Enum.join(clauses) <> "  def #{n}(other), do: {:error, {:unknown, other}}\n"
  end

  defp binary_parse(n) do
    p = word()
    """
      def #{n}(<<"#{p}:", rest::binary>>), do: {:#{p}, rest}
      def #{n}(<<"#{word()}=", rest::binary>>) do
        case String.split(rest, "#{pick([",", ";", "&", "|"])}", parts: #{range(2, 5)}) do
          [head | tail] -> {:ok, head, tail}
          [] -> :error
        end
      end
      def #{n}(<<size::#{pick([8, 16, 32])}, data::binary-size(size), rest::binary>>), do: {:frame, data, rest}
      def #{n}(_), do: :error
    """
  end

  defp struct_update(n) do
    f = word()
    """
      def #{n}(%__MODULE__{} = struct, #{f}) when not is_nil(#{f}) do
        %{struct | #{pick(["id", "name", "params", "meta"])}: #{f}, updated: true}
        |> Map.update!(:assigns, &Map.put(&1, :#{word()}, #{f}))
      end
      def #{n}(struct, _), do: struct
    """
  end

  defp recursion(n) do
    """
      def #{n}([], acc), do: Enum.reverse(acc)
      def #{n}([{_#{word()}_k, _#{word()}_v} = pair | rest], acc), do: #{n}(rest, [pair | acc])
      def #{n}([_ | rest], acc), do: #{n}(rest, acc)
    """
  end

  defp comprehension(n) do
    a = word() <> "s"
    p = word() <> "_prefix"
    """
      def #{n}(#{a}, #{p}) do
        for {key, value} <- #{a},
            is_atom(key),
            value not in [nil, false, ""],
            into: %{} do
          {:"\#{#{p}}_\#{key}", "#{word()}-\#{inspect(value)}"}
        end
      end
    """
  end

  defp cond_fun(n) do
    a = word()
    """
      def #{n}(#{a}) do
        cond do
          #{a} == :infinity -> :#{word()}
          #{a} < #{int(100)} -> :#{word()}
          #{a} < #{range(100, 10_000)} -> {:#{word()}, div(#{a}, #{range(2, 10)})}
          true -> {:error, "#{str()}: \#{inspect(#{a})}"}
        end
      end
    """
  end

  defp error_raise(n) do
    a = word()
    """
      def #{n}(#{a}) do
        raise ArgumentError,
              "#{str()} \#{inspect(#{a})}, " <>
                "#{str()}. #{String.capitalize(str())} (see the :#{word()} option)"
      end
    """
  end

  defp map_reduce(n, known) do
    step = if known != [], do: "#{pick(known)}(item)", else: "{:item, item}"
    """
      def #{n}(items) when is_list(items) do
        {mapped, count} =
          Enum.map_reduce(items, 0, fn item, count ->
            {#{step}, count + #{range(1, 3)}}
          end)

        %{#{word()}: mapped, count: count, kind: :#{word()}}
      end
    """
  end

  # A module of about `fun_count` functions: a struct, a literal table and
  # functions that call the module's earlier public arity-1 functions.
  def module(mod, fun_count) do
    {funs, _} =
      Enum.map_reduce(1..fun_count, [], fn _, known ->
        {text, name, arity} = function(Enum.take(known, 12))
        {text, if(arity == 1, do: [name | known], else: known)}
      end)

    table = for _ <- 1..range(4, 40), do: "    {:#{word()}, #{inspect(str())}, #{int(65536)}}"
    fields = Enum.uniq(for _ <- 1..range(3, 9), do: word()) -- ~w(id name params meta assigns updated)
    attr = word() <> "_table"
    """
    defmodule #{mod} do
      @moduledoc \"\"\"
      #{String.capitalize(str())}.

      #{String.capitalize(str())}, #{str()}.
      \"\"\"

      defstruct [:id, :name, :params, :meta, #{Enum.map_join(fields, ", ", &":#{&1}")}, assigns: %{}, updated: false]

      @type t :: %__MODULE__{}

      @#{attr} [
    #{Enum.join(table, ",\n")}
      ]

      def table, do: @#{attr}

    #{Enum.join(funs, "\n")}
    end
    """
  end
end

defmodule Main do
  import Gen

  # {app, modules, functions per module}: sizes of a Phoenix 1.7 app's hex
  # dependencies (stripped beams), roughly.
  @deps [
    {"phoenix", 110, 22}, {"phoenix_live_view", 120, 26}, {"phoenix_html", 14, 20},
    {"phoenix_live_dashboard", 90, 20}, {"phoenix_pubsub", 14, 16}, {"phoenix_ecto", 10, 18},
    {"phoenix_template", 8, 14}, {"ecto", 170, 26}, {"ecto_sql", 80, 22},
    {"postgrex", 110, 24}, {"db_connection", 36, 20}, {"decimal", 10, 38},
    {"plug", 100, 20}, {"plug_crypto", 14, 20}, {"bandit", 70, 22},
    {"thousand_island", 30, 18}, {"telemetry", 6, 18}, {"telemetry_metrics", 14, 20},
    {"jason", 20, 30}, {"mime", 4, 60}, {"gettext", 40, 22}, {"swoosh", 90, 20},
    {"finch", 30, 20}, {"mint", 50, 28}, {"castore", 2, 6}
  ]

  def deps(dir) do
    for {app, mods, funs} <- @deps do
      seed(app)
      root = Path.join(dir, app)
      File.mkdir_p!(Path.join(root, "lib"))
      File.write!(Path.join(root, "mix.exs"), """
      defmodule #{camel(app)}.MixProject do
        use Mix.Project

        def project do
          [app: :#{app}, version: "#{range(0, 3)}.#{range(0, 20)}.#{range(0, 9)}", elixir: "~> 1.14", deps: []]
        end

        def application, do: [extra_applications: [:logger]]
      end
      """)
      write_modules(Path.join(root, "lib"), camel(app), mods, funs)
    end
  end

  def app(dir) do
    seed("guildhall_web")
    File.mkdir_p!(dir)
    write_modules(dir, "GuildhallWeb", 150, 14)
  end

  defp write_modules(dir, ns, mods, funs) do
    for i <- 1..mods do
      mod = "#{ns}.#{camel(word())}#{camel(word())}#{i}"
      File.write!(Path.join(dir, "m#{i}.ex"), CodeGen.module(mod, max(2, funs + range(2 - funs, funs))))
    end
  end
end

case System.argv() do
  ["deps", dir] -> Main.deps(dir)
  ["app", dir] -> Main.app(dir)
  _ -> IO.puts(:stderr, "usage: elixir gen_code.exs deps|app DIR") && System.halt(2)
end
