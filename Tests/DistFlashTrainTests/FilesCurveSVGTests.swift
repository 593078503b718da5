import DistFlashAttn
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import DistFlashTrain

@Suite struct FilesCurveSVGTests {
    /// Parses `svg` and counts elements by name; nil if it is not well-formed XML.
    final class ElementCounter: NSObject, XMLParserDelegate {
        var counts: [String: Int] = [:]
        var text = ""
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            counts[name, default: 0] += 1
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

        static func parse(_ svg: String) -> ElementCounter? {
            let counter = ElementCounter()
            let parser = XMLParser(data: Data(svg.utf8))
            parser.delegate = counter
            return parser.parse() ? counter : nil
        }
    }

    static let points = (0...50).map { step in
        CurvePoint(step: step * 20, loss: 4 * exp(-Double(step) / 10) + 0.1,
                   accuracy: step < 10 ? nil : min(1, Double(step) / 40))
    }

    @Test func chartIsWellFormedWithBothLinesAndAxes() throws {
        let svg = CurveSVG.render(Self.points, title: "recall <S = 4096> & \"window\"", chanceAccuracy: 1.0 / 64)
        let parsed = try #require(ElementCounter.parse(svg))
        #expect(parsed.counts["svg"] == 1 && parsed.counts["polyline"] == 2)
        #expect(parsed.text.contains("recall <S = 4096> & \"window\""))
        #expect(parsed.text.contains("step") && parsed.text.contains("loss") && parsed.text.contains("accuracy"))
        #expect(parsed.text.contains("1000") && parsed.text.contains("100 %") && parsed.text.contains("chance 1.56 %"))
    }

    @Test func lossOnlyAndDegenerateInputsStillGiveWellFormedCharts() throws {
        let lossOnly = CurveSVG.render(Self.points.map { CurvePoint(step: $0.step, loss: $0.loss) }, title: "text")
        let parsed = try #require(ElementCounter.parse(lossOnly))
        #expect(parsed.counts["polyline"] == 1 && !parsed.text.contains("accuracy"))
        for points in [[], [CurvePoint(step: 3, loss: .nan)], [CurvePoint(step: 0, loss: 0, accuracy: 0)],
                       [CurvePoint(step: 0, loss: 2), CurvePoint(step: 1, loss: .infinity),
                        CurvePoint(step: 2, loss: 1)]] {
            let svg = CurveSVG.render(points, title: "edge")
            #expect(ElementCounter.parse(svg) != nil)
            #expect(!svg.contains("nan") && !svg.contains("inf"))
        }
    }

    @Test func writesTheFileAllOrNothing() throws {
        try withScratchFolder { folder in
            let url = folder.appendingPathComponent("curves/run.svg")
            try CurveSVG.write(Self.points, title: "run", to: url)
            let written = try String(contentsOf: url, encoding: .utf8)
            #expect(written == CurveSVG.render(Self.points, title: "run"))
            let folderContents = try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path)
            #expect(folderContents == ["run.svg"])
        }
    }
}
